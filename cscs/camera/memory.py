"""Keeping freed memory for reuse: big buffers, allocated and freed all night.

A CSC that moves pixels allocates a few MB per segment over and over: ZeroMQ's receive
buffers for each frame (inside libzmq, where no pool of ours can reach), numpy arrays
for each image. By default glibc's ``malloc`` hands such blocks back to the kernel when
they are freed (``munmap``, or trimming a heap) and takes fresh ones for the next, and a
fresh page costs a fault and a zeroing: on the archiver's ComCam catch-up that was a
sixth of all its CPU time, ``clear_page`` under the kernel's copy of each TCP segment
into a new buffer. Told to keep them, it reuses the same pages, and the faults stop once
the first few images have passed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import structlog

__all__ = ["keep_freed_memory"]

# mallopt(3) parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

_MMAP_THRESHOLD = 32 * 2**20  # glibc's maximum: blocks up to this come from a heap
_TRIM_THRESHOLD = 2**30  # free memory kept at the top of the heap before it is returned


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed big blocks; True if it was told.

    Must run before the process starts its first thread: with one arena, every thread's
    blocks come from the same heap, whose top is trimmed only past ``_TRIM_THRESHOLD``
    (a thread's own arena gives back whole 64 MB heaps whenever they empty). What is
    kept is bounded by the most the process ever held at once: the few detectors in
    flight. A no-op (False) where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # musl and others: no mallopt; their allocators differ anyway
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = {
        _M_ARENA_MAX: 1,
        _M_MMAP_THRESHOLD: _MMAP_THRESHOLD,
        _M_TRIM_THRESHOLD: _TRIM_THRESHOLD,
    }
    accepted = all(mallopt(parameter, value) == 1 for parameter, value in settings.items())
    if not accepted:
        structlog.get_logger("memory").warning(
            "malloc refused a setting; freed memory may be returned"
        )
    return accepted
