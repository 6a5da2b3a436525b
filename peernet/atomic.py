"""Safe file I/O: atomic writes (never half a file, never over a non-file) and bounded reads of regular files."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (the directory entry itself is data too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TEMP_SUFFIX = ".tmp"


def temp_prefix(name: str) -> str:
    """How the temporary files of writes to ``name`` begin (``.NAME.``), so a cleaner can find them."""
    return f".{name}."


def write_atomic(path: str | Path, data: bytes | str | Callable[[BinaryIO], None], *, mode: int = 0o644) -> Path:
    """Write ``data`` (bytes, text as UTF-8, or a function that writes to a binary file) to ``path`` atomically.

    A temporary file in the same directory gets ``mode`` before the first byte is written (so a secret is
    never readable by others, not even for a moment), is filled, flushed and fsynced, renamed over
    ``path``, and the directory is fsynced. On any error the temporary file is removed and ``path`` is
    left as it was. ``path`` must be a regular file or not exist: a directory, symbolic link, FIFO or device
    there is refused, never replaced. OSError propagates; callers turn it into their own typed error.
    """
    target = Path(path)
    _check_replaceable(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=temp_prefix(target.name), suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        _check_replaceable(target)  # again, as close to the rename as we can: the write may have taken long
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words: "a directory", "a FIFO (named pipe)", ..."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def _check_replaceable(target: Path) -> None:
    """Refuse to rename over anything but a regular file (a rename would silently swap a device node, a
    symbolic link or a pipe for a plain file), and say plainly when the directory is missing."""
    try:
        st = os.lstat(target)
    except ValueError:
        raise OSError(errno.EINVAL, "the path contains a NUL character", str(target)) from None
    except (FileNotFoundError, NotADirectoryError):
        parent = target.parent
        if parent.exists() and not parent.is_dir():
            raise OSError(errno.ENOTDIR, f"{parent} is not a directory", str(target)) from None
        if not parent.exists():
            raise OSError(errno.ENOENT, f"directory {parent} does not exist", str(target)) from None
        return
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EEXIST,
                      f"it is {file_kind(st.st_mode)}, not a regular file: refusing to replace it", str(target))


def read_bounded(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (symbolic links followed), refusing one larger than ``limit``.

    Nothing but a regular file is ever opened for reading: a FIFO or /dev/stdin would block forever and
    /dev/zero never ends. The file is opened non-blocking and checked again after the open (it may have
    been swapped in between), and at most ``limit`` + 1 bytes are read even if it grows meanwhile.
    OSError with a reason a user can act on; callers turn it into their own typed error.
    """
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"it is {file_kind(mode)}, not a regular file", str(path))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except ValueError:  # os.stat refuses a path with a NUL character this way
        raise OSError(errno.EINVAL, "the path contains a NUL character", str(path)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"it is {file_kind(st.st_mode)}, not a regular file", str(path))
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"it is {st.st_size:,} bytes, more than the limit of {limit:,}", str(path))
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise OSError(errno.EFBIG, f"it grew past the limit of {limit:,} bytes while being read", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)
