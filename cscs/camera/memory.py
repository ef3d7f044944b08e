"""Keeping freed memory for reuse: big buffers, allocated and freed all night.

A CSC that moves pixels allocates a few MB per segment over and over: ZeroMQ's receive
buffers for each frame (inside libzmq, where no pool of ours can reach), numpy arrays
for each image. By default glibc's ``malloc`` hands such blocks back to the kernel when
they are freed (``munmap``, or trimming a heap) and takes fresh ones for the next, and a
fresh page costs a fault and a zeroing: on the archiver's ComCam catch-up that was a
sixth of all its CPU time, ``clear_page`` under the kernel's copy of each TCP segment
into a new buffer. Told to keep them, it reuses the same pages, and the faults stop once
the first few images have passed.

What a flood leaves behind is the opposite case: :func:`release_freed_memory` (glibc's
``malloc_trim``) hands the freed memory back once, e.g. after many connections of a
flood of DAQ clients have gone (ADR 0011).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable

import structlog

__all__ = ["keep_freed_memory", "release_freed_memory"]

# mallopt(3) parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

_MMAP_THRESHOLD = 32 * 2**20  # glibc's maximum: blocks up to this come from a heap
_TRIM_THRESHOLD = 2**30  # free memory kept at the top of the heap before it is returned


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, where the process runs on it (None elsewhere: musl has no mallopt)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed big blocks; True if it was told.

    Must run before the process starts its first thread: with one arena, every thread's
    blocks come from the same heap, whose top is trimmed only past ``_TRIM_THRESHOLD``
    (a thread's own arena gives back whole 64 MB heaps whenever they empty). What is
    kept is bounded by the most the process ever held at once: the few detectors in
    flight. A no-op (False) where the C library is not glibc.
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False  # not glibc: no mallopt; other allocators differ anyway
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


def release_freed_memory() -> bool:
    """Return the allocator's free memory to the system (about 10 ms, holding its lock);
    False where that is not glibc. ctypes releases the GIL for the call."""
    trim: Callable[[int], int] | None = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True
