"""Image dataset loaders (Fashion-MNIST, MNIST, CIFAR-10) from local files; nothing is downloaded."""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from peernet.data.records import CHUNK_BYTES, open_stream, read_exact, select_records
from peernet.errors import ConfigError, DataError, escaped

DATASETS = ("fashion-mnist", "mnist", "cifar10")
#: (C, H, W) of each dataset's images, as the loaders check them: a model can be built without reading one.
INPUT_SHAPES = {"fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}

SYSTEM_DATA_ROOT = Path("/usr/share/datasets")
ENV_VAR = "PEERNET_DATA"

# Per-channel mean/std of the training images scaled to [0, 1]; the usual published constants.
_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}

_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST = "test_batch.bin"
_CIFAR_SUBDIR = "cifar-10-batches-bin"
_CIFAR_RECORD = 1 + 3 * 32 * 32

# IDX type codes (third magic byte) and their big-endian numpy dtypes.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_HOW_TO_GET = {
    "fashion-mnist": (
        "on Debian/Ubuntu run 'apt-get install dataset-fashion-mnist' (installs them in "
        "/usr/share/datasets/fashion-mnist), or put the four IDX files (train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in a directory "
        f"and pass --data-dir DIR or set {ENV_VAR}=DIR"
    ),
    "mnist": (
        "put the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; raw or .gz) in a directory and pass --data-dir DIR, "
        f"or set {ENV_VAR} to that directory or to a parent holding it as mnist/"
    ),
    "cifar10": (
        "unpack the CIFAR-10 binary version (cifar-10-binary.tar.gz: data_batch_1.bin .. data_batch_5.bin "
        "and test_batch.bin, optionally inside cifar-10-batches-bin/) into a directory and pass "
        "--data-dir DIR, "
        f"or set {ENV_VAR} to that directory or to a parent holding it as cifar10/"
    ),
}


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image dataset: uint8 images of shape (n, C, H, W), normalised per batch by ``normalise``.

    Kept as bytes, not floats: a quarter of the memory, and a node daemon holds only the rows it uses
    (``load_dataset(..., train_rows=...)``). Instances from ``load_dataset`` without rows are cached and
    shared: treat the tensors as read-only.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    def normalise(self, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 images → standardised per channel, in float32 (then ``dtype``).

        The same float32 operations, in the same order, as standardising the whole set at load time did, so
        every batch is bit-identical to a row of that set.
        """
        return normalise(self.name, images, dtype)


def normalise(name: str, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images of dataset ``name`` (…, C, H, W) → float32 standardised per channel, then ``dtype``."""
    mean, std = _NORMALISATION[name]
    shape = (-1, 1, 1)
    x = images.to(torch.float32).div_(255.0)
    x.sub_(torch.tensor(mean, dtype=torch.float32, device=x.device).reshape(shape))
    x.div_(torch.tensor(std, dtype=torch.float32, device=x.device).reshape(shape))
    return x if dtype == torch.float32 else x.to(dtype)


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}", key="dataset")


def _find_file(directory: Path, stem: str) -> Path | None:
    """The IDX file ``stem`` in ``directory``, gzipped or raw (gz preferred, as shipped)."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _has_files(name: str, directory: Path) -> bool:
    if not directory.is_dir():
        return False
    if name == "cifar10":
        return all((directory / f).is_file() for f in (*_CIFAR_TRAIN, _CIFAR_TEST))
    return all(_find_file(directory, stem) is not None for stem in _IDX_FILES.values())


def _candidates(name: str, base: Path, *, parent_ok: bool) -> list[Path]:
    """Directories that may hold the files: base, base/<name> if ``parent_ok``, and CIFAR's subdirectory."""
    dirs = [base, base / name] if parent_ok else [base]
    if name == "cifar10":
        dirs = [d for b in dirs for d in (b, b / _CIFAR_SUBDIR)]
    return dirs


def resolve_data_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """The directory holding dataset ``name``'s files.

    An explicit ``data_dir`` is authoritative (a wrong path is an error, not a silent fallback to other
    files); otherwise ``$PEERNET_DATA`` and then ``/usr/share/datasets/<name>`` are searched in that order.
    ``data_dir`` and ``$PEERNET_DATA`` may name the dataset directory itself or a parent holding ``<name>/``;
    for CIFAR-10 a ``cifar-10-batches-bin/`` subdirectory is also looked in. Raises DataError listing the
    paths tried and how to get the files, or naming ``$PEERNET_DATA`` when it is not a directory.
    """
    _check_name(name)
    if data_dir is not None:
        bases = [(Path(data_dir).expanduser(), True)]
    else:
        env = os.environ.get(ENV_VAR)
        bases = [(_env_dir(env), True)] if env else []
        bases.append((SYSTEM_DATA_ROOT / name, False))
    tried: list[Path] = []
    for base, parent_ok in bases:
        for directory in _candidates(name, base, parent_ok=parent_ok):
            if directory in tried:
                continue
            tried.append(directory)
            if _has_files(name, directory):
                return directory.resolve()
    where = ", ".join(str(p) for p in tried)
    raise DataError(f"dataset '{name}' not found (tried {where}); to get it, {_HOW_TO_GET[name]}")


def _env_dir(value: str) -> Path:
    """``$PEERNET_DATA`` as a directory. One that does not exist is a typo, reported rather than skipped in
    favour of the system copy; an existing one without this dataset may serve others, so the search goes on."""
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(f"{ENV_VAR}={escaped(value)} is not a directory; set it to a directory holding the "
                        f"dataset files (or a parent of <name>/ directories), or unset it")
    return path


def _idx_header(fh: BinaryIO, path: Path) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """Read an IDX header: two zero bytes, a type code, the number of dimensions, one big-endian uint32 each."""
    head = read_exact(fh, 4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {head[:4].hex() or 'empty'})")
    dtype = _IDX_DTYPES.get(head[2])
    if dtype is None:
        raise DataError(f"{path}: unknown IDX type code 0x{head[2]:02x}")
    ndim = head[3]
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares zero dimensions")
    raw = read_exact(fh, 4 * ndim)
    if len(raw) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({4 + len(raw)} bytes, need {4 + 4 * ndim})")
    return dtype, tuple(int(d) for d in np.frombuffer(raw, dtype=">u4"))


def _idx_payload(fh: BinaryIO, path: Path, dtype: np.dtype[Any], dims: tuple[int, ...],
                 rows: np.ndarray | None = None) -> np.ndarray:
    """The IDX array after the header (rows ``rows`` of its first axis only), in native byte order."""
    record = int(np.prod(dims[1:], dtype=np.int64)) * dtype.itemsize
    try:
        raw = select_records(fh, path, dims[0], record, rows)
    except DataError as exc:
        raise DataError(f"{exc}; IDX dims {dims} of {dtype.name}") from None
    arr = raw.view(dtype).reshape(len(raw), *dims[1:])
    return arr if dtype.isnative else arr.astype(dtype.newbyteorder("="))


def read_idx(path: Path, rows: np.ndarray | None = None) -> np.ndarray:
    """Decode an IDX file (raw or .gz) into an array in native byte order; ``rows`` (sorted, unique indices
    of the first axis) keeps only those, reading the file in bounded memory."""
    path = Path(path)
    with open_stream(path) as fh:
        dtype, dims = _idx_header(fh, path)
        return _idx_payload(fh, path, dtype, dims, rows)


def _labels(path: Path | str, labels: np.ndarray, num_classes: int) -> torch.Tensor:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels outside 0..{num_classes - 1}")
    return torch.from_numpy(labels.astype(np.int64))


def _idx_paths(name: str, directory: Path, split: str) -> tuple[Path, Path]:
    images = _find_file(directory, _IDX_FILES[f"{split}_x"])
    labels = _find_file(directory, _IDX_FILES[f"{split}_y"])
    if images is None or labels is None:
        raise DataError(f"{directory}: IDX files of '{name}' are missing; {_HOW_TO_GET[name]}")
    return images, labels


def _idx_split(name: str, directory: Path, split: str, rows: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8, (n, 1, 28, 28)) and labels of one split, only ``rows`` of them when given."""
    images_path, labels_path = _idx_paths(name, directory, split)
    labels = read_idx(labels_path)
    with open_stream(images_path) as fh:
        dtype, dims = _idx_header(fh, images_path)
        if dtype != np.uint8 or len(dims) != 3 or dims[1:] != (28, 28):
            raise DataError(f"{images_path}: expected uint8 images of shape (n, 28, 28), got {dims}")
        if labels.ndim != 1 or labels.shape[0] != dims[0]:
            raise DataError(f"{labels_path}: {labels.shape[0]} labels for {dims[0]} images")
        images = _idx_payload(fh, images_path, dtype, dims, rows)
    kept = labels if rows is None else labels[rows]
    return torch.from_numpy(images.reshape(-1, 1, 28, 28)), _labels(labels_path, kept, 10)


def _cifar_files(directory: Path, split: str) -> tuple[Path, ...]:
    return tuple(directory / f for f in (_CIFAR_TRAIN if split == "train" else (_CIFAR_TEST,)))


def _cifar_count(path: Path) -> int:
    """Records in a CIFAR batch file: from its size, or by decompressing it once if it is gzipped."""
    size = 0
    with open_stream(path) as fh:
        if isinstance(fh, gzip.GzipFile):
            while chunk := fh.read(CHUNK_BYTES):
                size += len(chunk)
        else:
            size = os.fstat(fh.fileno()).st_size
    if not size or size % _CIFAR_RECORD:
        raise DataError(f"{path}: {size} bytes is not a whole number of {_CIFAR_RECORD}-byte CIFAR records")
    return size // _CIFAR_RECORD


def _cifar_records(directory: Path, split: str, rows: np.ndarray | None, cols: slice = slice(None)
                   ) -> Iterator[np.ndarray]:
    """One split's records, batch file by batch file: only ``rows`` (numbered across the files in order) when
    given, columns ``cols`` of each."""
    offset = 0
    for path in _cifar_files(directory, split):
        count = _cifar_count(path)
        mine = None if rows is None else rows[(rows >= offset) & (rows < offset + count)] - offset
        with open_stream(path) as fh:
            yield select_records(fh, path, count, _CIFAR_RECORD, mine, cols)
        offset += count


def _cifar_split(directory: Path, split: str, rows: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8, (n, 3, 32, 32)) and labels of one split, only ``rows`` of them when given."""
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for records in _cifar_records(directory, split, rows):
        images.append(records[:, 1:].reshape(-1, 3, 32, 32))
        labels.append(records[:, 0])
    return torch.from_numpy(np.concatenate(images)), _labels(directory / _cifar_files(directory, split)[0],
                                                              np.concatenate(labels), 10)


def _split(name: str, directory: Path, split: str, rows: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "cifar10":
        return _cifar_split(directory, split, rows)
    return _idx_split(name, directory, split, rows)


def _check_rows(rows: np.ndarray | None, total: int, split: str) -> np.ndarray | None:
    if rows is None:
        return None
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or (rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= total)):
        raise DataError(f"{split} rows must be sorted, unique indices in 0..{total - 1}")
    return rows


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, directory: Path) -> ImageDataset:
    # Cached because the simulator and tests load the same set repeatedly and decoding takes ~1 s.
    train_x, train_y = _split(name, directory, "train", None)
    test_x, test_y = _split(name, directory, "test", None)
    return ImageDataset(name, train_x, train_y, test_x, test_y, num_classes=10)


@functools.lru_cache(maxsize=8)
def _labels_cached(name: str, directory: Path) -> tuple[np.ndarray, np.ndarray]:
    if name == "cifar10":
        # Labels are the first byte of each record: a pass over the files, keeping one column.
        train, test = (np.concatenate(list(_cifar_records(directory, split, None, slice(0, 1)))).reshape(-1)
                       for split in ("train", "test"))
        first = directory / _CIFAR_TRAIN[0]
        return _labels(first, train, 10).numpy(), _labels(directory / _CIFAR_TEST, test, 10).numpy()
    found = [_idx_paths(name, directory, split)[1] for split in ("train", "test")]
    train, test = (_labels(p, read_idx(p), 10).numpy() for p in found)
    return train, test


def load_labels(name: str, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) labels of dataset ``name`` as int64 arrays, without decoding any image (cached)."""
    return _labels_cached(name, resolve_data_dir(name, data_dir))


def load_dataset(name: str, data_dir: str | Path | None = None, *, train_rows: np.ndarray | None = None,
                 test_limit: int | None = None) -> ImageDataset:
    """Load dataset ``name`` (one of DATASETS) from local files; see ``resolve_data_dir`` for where.

    Without arguments: the whole set, cached and shared. ``train_rows`` (sorted, unique indices) keeps only
    those training images, in that order, and ``test_limit`` only the first test images: what one node
    daemon needs, read in bounded memory and not cached.
    """
    directory = resolve_data_dir(name, data_dir)
    if train_rows is None and test_limit is None:
        return _load_cached(name, directory)
    train_labels, test_labels = _labels_cached(name, directory)
    rows = _check_rows(train_rows, len(train_labels), "train")
    limit = len(test_labels) if test_limit is None else min(max(test_limit, 0), len(test_labels))
    train_x, train_y = _split(name, directory, "train", rows)
    test_x, test_y = _split(name, directory, "test", np.arange(limit, dtype=np.int64))
    return ImageDataset(name, train_x, train_y, test_x, test_y, num_classes=10)
