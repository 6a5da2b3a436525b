"""Atomic file writes: a reader sees the old file or the new one, never half of one, even after a kill -9."""

from __future__ import annotations

import os
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
    left as it was. OSError propagates; callers turn it into their own typed error.
    """
    target = Path(path)
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
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
