"""Image dataset loaders (Fashion-MNIST, MNIST, CIFAR-10) from local files; nothing is downloaded."""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peernet.errors import ConfigError, DataError

DATASETS = ("fashion-mnist", "mnist", "cifar10")

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
    """A labelled image dataset with normalised float32 images of shape (n, C, H, W).

    Instances are cached and shared by ``load_dataset``: treat the tensors as read-only.
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
    paths tried and how to get the files.
    """
    _check_name(name)
    if data_dir is not None:
        bases = [(Path(data_dir).expanduser(), True)]
    else:
        env = os.environ.get(ENV_VAR)
        bases = [(Path(env).expanduser(), True)] if env else []
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


def _read_bytes(path: Path) -> bytes:
    """File contents, transparently gunzipped when the file starts with the gzip magic."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def read_idx(path: Path) -> np.ndarray:
    """Decode an IDX file (raw or .gz) into an array in native byte order.

    Header: two zero bytes, a type code, the number of dimensions, then one big-endian uint32 per dimension.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype = _IDX_DTYPES.get(data[2])
    if dtype is None:
        raise DataError(f"{path}: unknown IDX type code 0x{data[2]:02x}")
    ndim = data[3]
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: IDX payload is {len(data) - header} bytes, but dims {dims} of {dtype.name} "
            f"need {expected}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _normalise(name: str, images_u8: np.ndarray) -> torch.Tensor:
    """uint8 (n, C, H, W) → float32 standardised per channel."""
    mean, std = _NORMALISATION[name]
    x = images_u8.astype(np.float32) / np.float32(255.0)
    x -= np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    x /= np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return torch.from_numpy(x)


def _labels(path: Path | str, labels: np.ndarray, num_classes: int) -> torch.Tensor:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels outside 0..{num_classes - 1}")
    return torch.from_numpy(labels.astype(np.int64))


def _load_idx(name: str, directory: Path) -> ImageDataset:
    parts: dict[str, torch.Tensor] = {}
    for split in ("train", "test"):
        images_path = _find_file(directory, _IDX_FILES[f"{split}_x"])
        labels_path = _find_file(directory, _IDX_FILES[f"{split}_y"])
        if images_path is None or labels_path is None:
            raise DataError(f"{directory}: IDX files of '{name}' are missing; {_HOW_TO_GET[name]}")
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{images_path}: expected uint8 images of shape (n, 28, 28), got {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images")
        parts[f"{split}_x"] = _normalise(name, images.reshape(-1, 1, 28, 28))
        parts[f"{split}_y"] = _labels(labels_path, labels, 10)
    return ImageDataset(name=name, num_classes=10, **parts)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = _read_bytes(path)
    if not data or len(data) % _CIFAR_RECORD:
        raise DataError(
            f"{path}: {len(data)} bytes is not a whole number of {_CIFAR_RECORD}-byte CIFAR records"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0]


def _load_cifar(name: str, directory: Path) -> ImageDataset:
    parts: dict[str, torch.Tensor] = {}
    for split, files in (("train", _CIFAR_TRAIN), ("test", (_CIFAR_TEST,))):
        batches = [_read_cifar_batch(directory / f) for f in files]
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        parts[f"{split}_x"] = _normalise(name, images)
        parts[f"{split}_y"] = _labels(directory / files[0], labels, 10)
    return ImageDataset(name=name, num_classes=10, **parts)


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, directory: Path) -> ImageDataset:
    # Cached because the simulator and tests load the same set repeatedly and decoding takes ~1 s.
    if name == "cifar10":
        return _load_cifar(name, directory)
    return _load_idx(name, directory)


def load_dataset(name: str, data_dir: str | Path | None = None) -> ImageDataset:
    """Load dataset ``name`` (one of DATASETS) from local files; see ``resolve_data_dir`` for where."""
    return _load_cached(name, resolve_data_dir(name, data_dir))
