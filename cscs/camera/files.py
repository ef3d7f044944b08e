"""Writing files so that a reader never sees a partial one under its final name.

Write to a hidden temporary name in the same directory, ``fsync``, rename, then ``fsync``
the directory: after a crash at any point the final name holds either nothing or the
whole file. Every file this project must not lose goes through :func:`atomic_file` or,
for the archive's big files, :func:`write_buffer_atomically`.

Why the big files bypass the page cache (``O_DIRECT``): on the virtual machines the
observatory's software is measured on, a page the guest has not touched lately costs the
host a fault and a zeroed page, so a buffered ``write`` of a new file runs at ~300 MB/s
with a core busy in the kernel, against ~1200 MB/s for the same bytes written directly
from a buffer that is reused. An archive file is written once and not read back soon, so
the page cache has nothing to give it; the ``fsync`` that follows still makes it durable.

And the two rules for files whose names or locations come from others (anyone on the
network can publish anything): a path built from names stays under its directory
(:func:`path_under`, used by the header service and the archive store alike), and a
file read where a message says is read only from trusted directories, only if it is a
regular file, and never more than a limit (:func:`resolve_under`,
:func:`read_regular_file`).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "DIRECT_ALIGNMENT",
    "PathEscapeError",
    "RefusedFileError",
    "atomic_file",
    "direct_length",
    "final_name",
    "fsync_directory",
    "path_under",
    "publish",
    "read_regular_file",
    "resolve_under",
    "temporary_name",
    "write_atomically",
    "write_buffer_atomically",
    "write_buffer_durably",
]

DIRECT_ALIGNMENT = 4096  # O_DIRECT: buffer address, file offset and length multiples of this
_DIRECT_CHUNK = 16 * 2**20  # measured: 8 to 64 MiB per write all reach the disk's rate
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)  # Linux; elsewhere the page cache is used
_O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK: int = getattr(os, "O_NONBLOCK", 0)
_READ_CHUNK = 2**20
_NOT_IN_A_NAME = frozenset({"/", "\\", "\0", os.sep, os.altsep or "/"})


def direct_length(size: int) -> int:
    """``size`` rounded up to :data:`DIRECT_ALIGNMENT`: what a direct write of it moves."""
    return -(-size // DIRECT_ALIGNMENT) * DIRECT_ALIGNMENT


def fsync_directory(directory: Path) -> None:
    """Make a file's creation, rename or removal in ``directory`` survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """A hidden temporary path next to ``path``, renamed onto it if the block completes
    (the block must have fsynced it) and removed if it does not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    fsync_directory(path.parent)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` only if the block completes."""
    with _temporary_beside(path) as temporary, open(temporary, "wb") as stream:
        yield stream
        stream.flush()
        os.fsync(stream.fileno())


def write_atomically(path: Path, data: bytes) -> None:
    with atomic_file(path) as stream:
        stream.write(data)


def write_buffer_atomically(path: Path, buffer: memoryview, size: int) -> None:
    """Write the first ``size`` bytes of ``buffer`` to ``path``, atomically, bypassing the
    page cache where the file system allows it.

    ``buffer`` must start on a page boundary (an ``mmap``) and hold ``size`` rounded up to
    :data:`DIRECT_ALIGNMENT`: direct writes move whole blocks, and the file is cut back to
    ``size`` before it is synced. A file system that refuses ``O_DIRECT`` (``EINVAL``)
    gets an ordinary buffered write of the same bytes.
    """
    with _temporary_beside(path) as temporary:
        write_buffer_durably(temporary, buffer, size)


def write_buffer_durably(temporary: Path, buffer: memoryview, size: int) -> None:
    """:func:`write_buffer_atomically` without the rename: the bytes whole and synced
    under ``temporary``, for a caller that names the file itself later
    (:func:`publish`, once the archive's catalog has recorded it)."""
    padded = direct_length(size)
    if len(buffer) < padded:
        raise ValueError(f"buffer of {len(buffer)} bytes cannot hold {padded} for direct I/O")
    fd = _open_for_writing(temporary, direct=bool(_O_DIRECT))
    try:
        try:
            _write_all(fd, buffer[:padded] if _O_DIRECT else buffer[:size])
        except OSError as exc:
            if exc.errno != errno.EINVAL or not _O_DIRECT:
                raise
            os.close(fd)  # this file system takes no direct I/O after all
            fd = _open_for_writing(temporary, direct=False)
            _write_all(fd, buffer[:size])
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temporary: Path, path: Path) -> None:
    """Give a file written whole and synced under ``temporary`` its name, durably."""
    os.replace(temporary, path)
    fsync_directory(path.parent)


def temporary_name(path: Path) -> Path:
    """A hidden name beside ``path`` for the file while it is written (no reader looks
    for it; the archive store rolls forward or removes those a crash left behind:
    :func:`final_name` undoes it)."""
    unique = f"{os.getpid()}.{_WRITER}{next(_WRITES):x}"  # never two alike, in any process
    return path.with_name(f".{path.name}.{unique}.partial")


# Drawn once: a random draw per file costs a system call more than the name is worth.
_WRITER = secrets.token_hex(4)
_WRITES = itertools.count()


def final_name(temporary: Path) -> Path | None:
    """The path ``temporary`` (a :func:`temporary_name`) was written for; None if it is
    not one."""
    name = temporary.name
    if not (name.startswith(".") and name.endswith(".partial")):
        return None
    parts = name[1:].rsplit(".", 3)
    if len(parts) != 4 or not parts[0]:
        return None
    return temporary.with_name(parts[0])


def _open_for_writing(path: Path, *, direct: bool) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    if direct:
        try:
            return os.open(path, flags | _O_DIRECT, 0o644)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    return os.open(path, flags, 0o644)


def _write_all(fd: int, data: memoryview) -> None:
    written = 0
    while written < len(data):
        written += os.write(fd, data[written : written + _DIRECT_CHUNK])


# ---- paths built from names, and files read from where others say --------------------------


class RefusedFileError(ValueError):
    """A file someone else named is not one to read or write here (where it is, or what
    it is): the message says which and why."""


class PathEscapeError(RefusedFileError):
    """A path built from names off the bus, or named by a URL, is not where it must be."""


def path_under(root: Path, *names: str) -> Path:
    """``root / names[0] / names[1] …``, checked to stay under ``root``.

    The names come off the bus (an image name, a day of observation, a sensor). Their
    messages are checked where they are parsed (ICD §5, :mod:`cscs.camera.naming`); this
    is the second line of defence, where the path is made: each name must be a single
    plain component (not empty, not ``.`` or ``..``, no separator, no NUL), and the path,
    once symlinks are resolved, must still be under ``root`` resolved, so nothing is
    ever written outside the directory a CSC owns. PathEscapeError says which name and
    why. Returns the path as built (not resolved), so recorded paths keep their form.
    """
    for name in names:
        if not name or name in (".", "..") or any(c in name for c in _NOT_IN_A_NAME):
            raise PathEscapeError(
                f"{name[:80]!r} is not a plain file name: a path built from it would not "
                f"stay under {root}"
            )
    path = root.joinpath(*names)
    resolve_under(path, (root,))
    return path


def resolve_under(path: Path, roots: Sequence[Path]) -> Path:
    """``path`` with every symlink resolved, if that is under one of ``roots`` (each
    resolved too); PathEscapeError otherwise. Blocking (it reads the file system)."""
    if "\0" in str(path):
        raise PathEscapeError(f"{str(path)[:200]!r} holds a NUL character")
    real = path.resolve()
    for root in roots:
        if real.is_relative_to(root.resolve()):
            return real
    where = ", ".join(str(r) for r in roots) or "nowhere"
    raise PathEscapeError(f"{path} is not under a trusted directory ({where})")


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file at ``path``, if it holds at most ``max_bytes``.

    For a file someone else named: it is opened without following a final symlink and
    without blocking (a FIFO would wait for a writer for ever), checked to be a regular
    file (not a device: ``/dev/zero`` never ends) and to be no larger than the limit,
    then read with a bounded read, so a file that grows meanwhile is refused too and the
    memory taken is never more than ``max_bytes``. FileNotFoundError if there is none;
    RefusedFileError (a ValueError) naming what it is instead; other OSErrors as raised.
    """
    flags = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW and the last component is a symlink
            raise RefusedFileError(f"{path} is a symbolic link") from None
        raise
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise RefusedFileError(f"{path} is not a regular file")
        if status.st_size > max_bytes:
            raise RefusedFileError(f"{path} holds {status.st_size} bytes, more than {max_bytes}")
        chunks: list[bytes] = []
        left = max_bytes + 1  # one byte more than allowed: enough to see it grew
        while left > 0:
            chunk = os.read(fd, min(left, _READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise RefusedFileError(f"{path} grew beyond {max_bytes} bytes while being read")
    return data
