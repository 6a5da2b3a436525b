"""Tests for the dataset loaders: IDX reader, CIFAR-10 batches, real Fashion-MNIST and path resolution."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from peernet.data import datasets
from peernet.data.datasets import (
    DATASETS,
    ImageDataset,
    load_dataset,
    read_idx,
    resolve_data_dir,
)
from peernet.errors import ConfigError, DataError

_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode ``arr`` in IDX format (big-endian), as the MNIST files are."""
    code = _CODES[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_mnist_like(directory: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> None:
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            directory / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        )
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", (np.arange(n) % 10).astype(np.uint8))


def write_cifar(directory: Path, per_batch: int = 4) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name in [*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"]:
        labels = rng.integers(0, 10, per_batch, dtype=np.uint8)
        images = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        (directory / name).write_bytes(np.concatenate([labels[:, None], images], axis=1).tobytes())


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_round_trip(tmp_path: Path, suffix: str, dtype: type) -> None:
    values = np.arange(30) if dtype is np.uint8 else np.arange(30) - 7  # negatives check byte order/sign
    arr = values.reshape(2, 3, 5).astype(dtype)
    out = read_idx(write_idx(tmp_path / f"a.idx{suffix}", arr))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"\x08\x03\x08\x01\x00\x00\x00\x01\x05", "magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "type code"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x01", "header"),
        (b"", "magic"),
    ],
)
def test_read_idx_rejects_bad_header(tmp_path: Path, payload: bytes, match: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=match):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_rejects_truncated_payload(tmp_path: Path, suffix: str) -> None:
    data = idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))[:-10]
    path = tmp_path / f"t{suffix}"
    path.write_bytes(gzip.compress(data) if suffix else data)
    with pytest.raises(DataError, match="payload"):
        read_idx(path)


def test_read_idx_rejects_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 8), dtype=np.uint8)))[:-12])
    with pytest.raises(DataError):
        read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_loader_on_synthetic_files(tmp_path: Path, gz: bool) -> None:
    write_mnist_like(tmp_path, gz=gz)
    ds = load_dataset("mnist", tmp_path)
    assert ds.name == "mnist" and ds.num_classes == 10 and ds.input_shape == (1, 28, 28)
    assert ds.train_x.shape == (30, 1, 28, 28) and ds.test_x.shape == (10, 1, 28, 28)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_y.tolist() == [i % 10 for i in range(30)]
    assert load_dataset("mnist", tmp_path) is ds  # cached per (name, dir)


def test_mnist_loader_rejects_mismatched_label_count(tmp_path: Path) -> None:
    write_mnist_like(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(29, dtype=np.uint8))
    with pytest.raises(DataError, match="labels"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("subdir", ["", "cifar-10-batches-bin"])
def test_cifar10_loader_on_synthetic_batches(tmp_path: Path, subdir: str) -> None:
    write_cifar(tmp_path / subdir if subdir else tmp_path)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32) and ds.train_y.shape == (20,)
    assert int(ds.train_y.min()) >= 0 and int(ds.train_y.max()) <= 9
    # The first record's label and first pixel survive decoding and normalisation.
    raw = (resolve_data_dir("cifar10", tmp_path) / "data_batch_1.bin").read_bytes()
    assert int(ds.train_y[0]) == raw[0]
    expected = (raw[1] / 255 - 0.4914) / 0.2470
    assert float(ds.train_x[0, 0, 0, 0]) == raw[1]
    assert float(ds.normalise(ds.train_x[:1])[0, 0, 0, 0]) == pytest.approx(expected, abs=1e-5)


def test_cifar10_rejects_partial_record(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "test_batch.bin").write_bytes(b"\x01" * 3000)
    with pytest.raises(DataError, match="CIFAR records"):
        load_dataset("cifar10", tmp_path)


def test_fashion_mnist_real() -> None:
    ds = load_dataset("fashion-mnist")
    assert isinstance(ds, ImageDataset) and ds.name == "fashion-mnist"
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_y.shape == (60000,) and ds.test_y.shape == (10000,)
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert set(ds.train_y.unique().tolist()) == set(range(10))
    x = ds.normalise(ds.train_x)
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1.0) < 0.01
    assert load_dataset("fashion-mnist") is ds


def test_missing_dir_message_says_how_to_get_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "SYSTEM_DATA_ROOT", tmp_path / "system")
    monkeypatch.delenv("PEERNET_DATA", raising=False)
    with pytest.raises(DataError) as err:
        resolve_data_dir("fashion-mnist")
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "PEERNET_DATA" in message
    assert str(tmp_path / "system" / "fashion-mnist") in message
    with pytest.raises(DataError, match=r"data_batch_1\.bin"):
        resolve_data_dir("cifar10", tmp_path / "nowhere")


def test_explicit_dir_does_not_fall_back(tmp_path: Path) -> None:
    # The system copy exists, but an explicit wrong path must be reported, not silently replaced.
    with pytest.raises(DataError, match=str(tmp_path)):
        resolve_data_dir("fashion-mnist", tmp_path)


@pytest.mark.parametrize("as_parent", [False, True])
def test_peernet_data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_parent: bool) -> None:
    target = tmp_path / "mnist" if as_parent else tmp_path
    write_mnist_like(target, gz=False)
    monkeypatch.setenv("PEERNET_DATA", str(tmp_path))
    assert resolve_data_dir("mnist") == target.resolve()
    assert load_dataset("mnist").train_x.shape == (30, 1, 28, 28)


def test_peernet_data_env_falls_back_to_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An existing $PEERNET_DATA without this dataset may hold others: the system copy is used.
    system = tmp_path / "system"
    write_mnist_like(system / "mnist")
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(datasets, "SYSTEM_DATA_ROOT", system)
    monkeypatch.setenv("PEERNET_DATA", str(tmp_path / "empty"))
    assert resolve_data_dir("mnist") == (system / "mnist").resolve()


def test_peernet_data_env_that_is_no_directory_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A typo must not be skipped in favour of the system copy (which exists here).
    system = tmp_path / "system"
    write_mnist_like(system / "mnist")
    monkeypatch.setattr(datasets, "SYSTEM_DATA_ROOT", system)
    monkeypatch.setenv("PEERNET_DATA", str(tmp_path / "typo"))
    with pytest.raises(DataError, match=f"PEERNET_DATA={tmp_path / 'typo'} is not a directory"):
        resolve_data_dir("mnist")


def test_explicit_dir_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist_like(tmp_path / "a")
    write_mnist_like(tmp_path / "b")
    monkeypatch.setenv("PEERNET_DATA", str(tmp_path / "a"))
    assert resolve_data_dir("mnist", tmp_path / "b") == (tmp_path / "b").resolve()


def test_unknown_dataset_is_config_error() -> None:
    assert "fashion-mnist" in DATASETS
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_dataset("imagenet")


@pytest.mark.parametrize("name", sorted(datasets._NORMALISATION))
def test_normalise_is_bit_identical_to_standardising_the_whole_set(name: str) -> None:
    # Every byte value in every channel, standardised the way the loader once did at load time (numpy,
    # float32): per-batch normalisation must give the very same floats, so results do not move.
    mean, std = datasets._NORMALISATION[name]
    u8 = np.tile(np.arange(256, dtype=np.uint8), (len(mean), 1)).reshape(1, len(mean), 16, 16)
    x = u8.astype(np.float32) / np.float32(255.0)
    x -= np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    x /= np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    got = datasets.normalise(name, torch.from_numpy(u8)).numpy()
    assert np.array_equal(got.view(np.uint32), x.view(np.uint32))
    assert datasets.normalise(name, torch.from_numpy(u8), torch.float64).dtype == torch.float64


@pytest.mark.parametrize("gz", [True, False])
def test_subset_holds_exactly_the_rows_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool) -> None:
    write_mnist_like(tmp_path, n_train=300, n_test=40, gz=gz)
    monkeypatch.setattr("peernet.data.records.CHUNK_BYTES", 784 * 7)  # rows spread over many chunks
    full = load_dataset("mnist", tmp_path)
    rows = np.array([0, 5, 6, 7, 48, 49, 50, 199, 299])
    part = load_dataset("mnist", tmp_path, train_rows=rows, test_limit=12)
    assert torch.equal(part.train_x, full.train_x[torch.from_numpy(rows)])
    assert torch.equal(part.train_y, full.train_y[torch.from_numpy(rows)])
    assert torch.equal(part.test_x, full.test_x[:12]) and torch.equal(part.test_y, full.test_y[:12])
    with pytest.raises(DataError, match="sorted, unique"):
        load_dataset("mnist", tmp_path, train_rows=np.array([3, 2]))
    with pytest.raises(DataError, match="sorted, unique"):
        load_dataset("mnist", tmp_path, train_rows=np.array([300]))


def test_cifar_subset_spans_batch_files(tmp_path: Path) -> None:
    write_cifar(tmp_path, per_batch=6)
    full = load_dataset("cifar10", tmp_path)
    rows = np.array([1, 5, 6, 17, 29])  # batch files hold 6 records each
    part = load_dataset("cifar10", tmp_path, train_rows=rows, test_limit=2)
    assert torch.equal(part.train_x, full.train_x[torch.from_numpy(rows)])
    assert torch.equal(part.train_y, full.train_y[torch.from_numpy(rows)])
    assert part.test_x.shape == (2, 3, 32, 32)
    train_labels, test_labels = datasets.load_labels("cifar10", tmp_path)
    assert train_labels.tolist() == full.train_y.tolist() and test_labels.tolist() == full.test_y.tolist()


def test_subset_still_rejects_a_truncated_file(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, n_train=30, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", tmp_path, train_rows=np.array([0, 1]))
