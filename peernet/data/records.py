"""Fixed-size records read from raw or gzipped files in bounded memory, keeping only the rows asked for."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from peernet.errors import DataError

#: Bytes decoded at a time. A daemon that keeps 1/64 of the training images never holds more than this
#: much of the rest (the whole set decompressed would be 47 MB for Fashion-MNIST, 150 MB for CIFAR-10).
CHUNK_BYTES = 1 << 20


@contextmanager
def open_stream(path: Path) -> Iterator[BinaryIO]:
    """The file's bytes, transparently gunzipped when it starts with the gzip magic; DataError on any failure."""
    try:
        with open(path, "rb") as raw:
            magic = raw.read(2)
            raw.seek(0)
            if magic == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=raw) as unzipped:
                    yield unzipped  # type: ignore[misc]  # GzipFile is a binary stream
            else:
                yield raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def read_exact(fh: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at the end of the stream (a gzip member may return short reads)."""
    parts: list[bytes] = []
    need = n
    while need:
        part = fh.read(need)
        if not part:
            break
        parts.append(part)
        need -= len(part)
    return b"".join(parts)


def select_records(fh: BinaryIO, path: Path, count: int, record: int, rows: np.ndarray | None,
                   cols: slice = slice(None)) -> np.ndarray:
    """Records ``rows`` (sorted, unique; None: all) of the ``count`` records of ``record`` bytes each that follow
    in ``fh``, columns ``cols`` of each, as a uint8 array; the stream must end exactly after the last record.

    Reads the whole stream once, ``CHUNK_BYTES`` at a time, so memory is the chunk plus the rows kept.
    """
    width = len(range(record)[cols])
    kept = count if rows is None else len(rows)
    out = np.empty((kept, width), dtype=np.uint8)
    per = max(1, CHUNK_BYTES // record)
    done = 0  # rows of ``rows`` already copied
    for start in range(0, count, per):
        n = min(per, count - start)
        data = read_exact(fh, n * record)
        if len(data) != n * record:
            have = start * record + len(data)
            raise DataError(f"{path}: payload is {have} bytes, but {count} records of {record} bytes need "
                            f"{count * record} (truncated file)")
        chunk = np.frombuffer(data, dtype=np.uint8).reshape(n, record)
        if rows is None:
            out[start:start + n] = chunk[:, cols]
            continue
        upto = int(np.searchsorted(rows, start + n))
        out[done:upto] = chunk[rows[done:upto] - start][:, cols]
        done = upto
    if fh.read(1):
        raise DataError(f"{path}: payload is longer than the {count} records of {record} bytes it declares")
    return out
