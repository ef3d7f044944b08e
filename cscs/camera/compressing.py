"""Tile compression of raw files on every core: worker processes, pixels in shared memory.

Why processes: cfitsio (through ``fitsio``) holds the GIL while it compresses, so threads
compress one file at a time however many cores there are; each worker process writes a
whole file as :func:`~cscs.camera.fits.write_with_fitsio` does (the one way a compressed
file is made, checksums included) on a core of its own, and leaves the ``fsync`` and
the rename to the calling thread, so that it starts on the next file without waiting
for the disk.

Why shared memory: a ComCam detector is 75 MB of pixels. Pickling them to a worker
would copy them twice and through a pipe; instead the caller copies the segments once
into a shared buffer leased from a small pool, and the worker reads them in place. A
buffer is leased for as long as its file is being written, and at most one per worker
is kept idle after, so there are never more of them than files written at once (the
archiver bounds that by ``sensors_in_flight``) or workers: memory stays bounded as it
does without compression.

A worker that dies (killed by the kernel for memory, say) breaks a
``ProcessPoolExecutor`` for good: the pool is replaced and the files it held are written
again by the new one (a file appears whole or not at all, so redoing one is safe); a
file whose workers die twice fails with :class:`CompressionWorkerError` naming the cause.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cscs.camera.checksum import Algorithm
from cscs.camera.datasums import verify_segments
from cscs.camera.fits import Card, WrittenFile, commit, temporary_name, write_unsynced

__all__ = ["CompressionWorkerError", "CompressionWorkers"]

Segment = tuple[Sequence[Card], npt.NDArray[np.int32]]
# Where each segment lies in the shared buffer: byte offset and (rows, columns).
Layout = tuple[tuple[int, tuple[int, int]], ...]


class CompressionWorkerError(RuntimeError):
    """Compression workers died twice while writing a file (the file is not written)."""


class CompressionWorkers:
    """A pool of processes writing tile-compressed raw files, one file per worker.

    ``write`` blocks its calling thread until the file is on disk: call it from as many
    threads as files should be written at once.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or _usable_cores()
        self._lock = threading.Lock()
        self._idle: list[shared_memory.SharedMemory] = []
        self._leased = 0
        self._closed = False
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # forkserver, not fork: the archiver has threads (and an event loop) that a
        # forked child would inherit half-way through whatever they were doing.
        context = multiprocessing.get_context("forkserver")
        pool = ProcessPoolExecutor(self.workers, mp_context=context)
        for _ in range(self.workers):  # start them now: the first file should not wait
            pool.submit(_warm_up)
        return pool

    def write(
        self,
        path: Path,
        primary: Sequence[Card],
        extensions: Sequence[Segment],
        *,
        datasums: Sequence[int],
        compression: str,
        checksum: Algorithm,
        publish: bool = True,
    ) -> WrittenFile:
        """Write ``path`` as :func:`~cscs.camera.fits.write_with_fitsio` would, in a
        worker, once the pixels are checked against ``datasums`` (as
        :func:`~cscs.camera.fits.write_raw_fits` checks them: DataSumMismatchError, and
        nothing written). OSError as the writer raised it; CompressionWorkerError if the
        worker died."""
        verify_segments([pixels for _, pixels in extensions], datasums)
        size = sum(pixels.nbytes for _, pixels in extensions)
        temporary = temporary_name(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._lease(size) as buffer:
                layout = _copy_in(buffer, [pixels for _, pixels in extensions])
                job = functools.partial(
                    _write_in_worker, buffer.name, layout, temporary, list(primary),
                    [list(c) for c, _ in extensions], compression, checksum,
                )  # fmt: skip
                file_bytes, digest = self._run(job, path)
            commit(temporary, path, publish=publish)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return WrittenFile(path, file_bytes, digest, checksum, None if publish else temporary)

    def _run(self, job: Callable[[], tuple[int, str]], path: Path) -> tuple[int, str]:
        for attempt in (1, 2):  # the worker writes a temporary file from the start: redo it
            with self._lock:
                pool = self._pool
            try:
                return pool.submit(job).result()
            except BrokenProcessPool as exc:
                self._replace(pool)
                if attempt == 2:
                    raise CompressionWorkerError(
                        f"the compression workers died twice writing {path.name} ({exc}); "
                        "the file was not written"
                    ) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop the workers once the files given to them are written, and free the
        shared buffers (the store waits for its writes first: nothing is cut short)."""
        with self._lock:
            pool, idle, self._idle = self._pool, self._idle, []
            self._closed = True  # buffers still leased are freed when handed back
        pool.shutdown(wait=True)
        for buffer in idle:
            _free(buffer)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._closed:
                raise CompressionWorkerError("the compression workers were stopped")
            if self._pool is not broken:
                return  # another thread saw the same death first
            self._pool = self._new_pool()
        broken.shutdown(wait=False, cancel_futures=True)

    @contextlib.contextmanager
    def _lease(self, size: int) -> Iterator[shared_memory.SharedMemory]:
        with self._lock:
            fitting = [b for b in self._idle if b.size >= size]
            buffer = min(fitting, key=lambda b: b.size) if fitting else None
            if buffer is not None:
                self._idle.remove(buffer)
            self._leased += 1
        if buffer is None:
            buffer = _new_buffer(size)
        try:
            yield buffer
        finally:
            with self._lock:
                self._leased -= 1
                self._idle.append(buffer)
                # keep no more idle buffers than could be leased at once again
                keep = 0 if self._closed else max(self.workers, self._leased)
                surplus = len(self._idle) - keep
                dropped = sorted(self._idle, key=lambda b: b.size)[:surplus] if surplus > 0 else []
                for old in dropped:
                    self._idle.remove(old)
            for old in dropped:
                _free(old)

    @property
    def shared_buffers(self) -> int:
        """Shared buffers in existence (leased and idle): bounded by the writes at once."""
        with self._lock:
            return self._leased + len(self._idle)


def _usable_cores() -> int:
    """The cores this process may run on (its affinity, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _new_buffer(size: int) -> shared_memory.SharedMemory:
    """A shared buffer of ``size`` bytes, or OSError(ENOSPC) naming the shortfall.

    Shared memory lives in a tmpfs (``/dev/shm``) whose pages are taken only when first
    written: a buffer larger than what is left there is created without complaint, and
    the copy into it then kills the process with SIGBUS, without a word. Containers get
    a 64 MB ``/dev/shm`` by default, less than one ComCam detector.
    """
    shm = Path("/dev/shm")
    if shm.is_dir():
        stats = os.statvfs(shm)
        free = stats.f_bavail * stats.f_frsize
        if free < size:
            raise OSError(
                errno.ENOSPC,
                f"{shm} has {free / 1e6:.0f} MB free, a file being compressed needs "
                f"{size / 1e6:.0f} MB there (give the archiver a larger {shm})",
            )
    return shared_memory.SharedMemory(create=True, size=max(size, 1))


def _copy_in(
    buffer: shared_memory.SharedMemory, segments: Sequence[npt.NDArray[np.int32]]
) -> Layout:
    layout = []
    offset = 0
    for pixels in segments:
        if pixels.dtype != np.int32 or pixels.ndim != 2:
            raise ValueError(f"segments must be 2-D int32, got {pixels.dtype} {pixels.shape}")
        target = np.ndarray(pixels.shape, np.int32, buffer.buf, offset)
        np.copyto(target, pixels)
        layout.append((offset, (int(pixels.shape[0]), int(pixels.shape[1]))))
        offset += pixels.nbytes
    return tuple(layout)


def _free(buffer: shared_memory.SharedMemory) -> None:
    buffer.close()
    with contextlib.suppress(FileNotFoundError):
        buffer.unlink()


def _warm_up() -> None:
    """Import cfitsio in a new worker before its first file."""
    import fitsio  # noqa: F401


def _write_in_worker(
    name: str,
    layout: Layout,
    temporary: Path,
    primary: list[Card],
    cards: list[list[Card]],
    compression: str,
    checksum: Algorithm,
) -> tuple[int, str]:
    """In a worker: the segments read in place from the caller's shared buffer."""
    # The worker only borrows the buffer: its owner frees it (track=False is 3.13+;
    # the pool's workers share their parent's resource tracker, which forgets the name
    # when the owner unlinks it).
    buffer = shared_memory.SharedMemory(name=name)
    try:
        segments = [np.ndarray(shape, np.int32, buffer.buf, offset) for offset, shape in layout]
        try:
            return write_unsynced(
                temporary, primary, list(zip(cards, segments, strict=True)),
                compression=compression, checksum=checksum,
            )  # fmt: skip
        finally:
            del segments  # before the buffer is closed under them
    finally:
        buffer.close()
