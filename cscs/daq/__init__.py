"""The DAQ as its readers see it: the wire protocol, the client library, the errors.

The simulator's server lives in ``sim/daq``; pointing the archiver at a real DAQ means
another :class:`DaqReader`, nothing else.
"""

from cscs.daq.client import DaqClient
from cscs.daq.errors import DaqError, DaqUnavailableError
from cscs.daq.reader import DaqReader, ImageInfo, Pixels, SensorPixels

__all__ = [
    "DaqClient",
    "DaqError",
    "DaqReader",
    "DaqUnavailableError",
    "ImageInfo",
    "Pixels",
    "SensorPixels",
]
