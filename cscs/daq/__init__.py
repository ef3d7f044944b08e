"""The DAQ as the archiver sees it: the wire protocol and the client library.

The simulator's server lives in ``sim/daq``; pointing the archiver at a real DAQ means
swapping :class:`cscs.daq.client.DaqClient`, nothing else.
"""
