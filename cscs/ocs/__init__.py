"""The OCS side of this project: the operators' tools and observing scripts.

``cscs ocs command | status | watch | run-script`` are thin I/O around the pure parts
here (the status board, the script parser) and :class:`cscs.core.remote.Remote`.
"""
