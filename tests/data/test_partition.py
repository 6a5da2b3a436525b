"""Tests for node partitions (iid, classes, dirichlet) and the stratified validation split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peernet.data.datasets import load_dataset
from peernet.data.partition import (
    PARTITIONS,
    class_histogram,
    node_classes,
    partition,
    partition_with_validation,
    validation_split,
)
from peernet.errors import ConfigError

# Fashion-MNIST-shaped labels: 6000 of each of 10 classes, in a shuffled order.
LABELS = np.random.default_rng(123).permutation(np.repeat(np.arange(10), 6000))


def assert_valid(parts: list[np.ndarray], n: int) -> None:
    """Sorted int64, in range, pairwise disjoint."""
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)
        assert p.size == 0 or (p[0] >= 0 and p[-1] < n)
    everything = np.concatenate(parts)
    assert np.unique(everything).size == everything.size


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_deterministic_and_seed_dependent(scheme: str) -> None:
    first = partition(LABELS, 8, scheme, seed=7)
    again = partition(LABELS, 8, scheme, seed=7)
    other = partition(LABELS, 8, scheme, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    assert_valid(first, LABELS.size)


def test_iid_equal_sizes_and_balanced() -> None:
    parts = partition(LABELS[:-3], 8, "iid", seed=0)
    assert {p.size for p in parts} == {(LABELS.size - 3) // 8}
    hist = class_histogram(LABELS, parts, 10)
    assert np.abs(hist / hist.sum(1, keepdims=True) - 0.1).max() < 0.03


@pytest.mark.parametrize("k", [1, 2, 4, 10])
def test_classes_gives_each_node_exactly_k(k: int) -> None:
    parts = partition(LABELS, 8, "classes", seed=0, classes_per_node=k)
    assert_valid(parts, LABELS.size)
    hist = class_histogram(LABELS, parts, 10)
    assert ((hist > 0).sum(axis=1) == k).all()
    assert len({p.size for p in parts}) == 1
    for node in range(8):
        assert set(np.flatnonzero(hist[node])) == set(node_classes(node, k, 10))


def test_classes_paper_layout_two_per_node() -> None:
    assert [node_classes(i, 2, 10) for i in range(6)] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [0, 1]]
    hist = class_histogram(LABELS, partition(LABELS, 8, "classes", seed=0, classes_per_node=2), 10)
    # Classes 0 and 1 are split between nodes 0 and 5 (3000 each); nodes 3 and 4 hold theirs alone
    # (2 × 6000) and are truncated to the smallest node's 6000, keeping both classes half and half.
    assert hist[0].tolist() == [3000, 3000, 0, 0, 0, 0, 0, 0, 0, 0]
    assert hist[3].tolist() == [0, 0, 0, 0, 0, 0, 3000, 3000, 0, 0]


def test_classes_on_fashion_mnist() -> None:
    labels = load_dataset("fashion-mnist").train_y.numpy()
    parts = partition(labels, 8, "classes", seed=3, classes_per_node=2)
    hist = class_histogram(labels, parts, 10)
    assert ((hist > 0).sum(axis=1) == 2).all() and len({p.size for p in parts}) == 1


def test_classes_keeps_every_class_on_small_data() -> None:
    # Imbalanced small data: truncation must not drop a node's rare class.
    labels = np.array([0] * 50 + [1] * 2 + [2] * 50 + [3] * 50)
    hist = class_histogram(
        labels, partition(labels, 4, "classes", seed=1, classes_per_node=2, num_classes=4), 4
    )
    assert ((hist > 0).sum(axis=1) == 2).all()


@pytest.mark.parametrize("k", [0, 11, -1])
def test_classes_rejects_bad_k(k: int) -> None:
    with pytest.raises(ConfigError, match="classes per node"):
        partition(LABELS, 8, "classes", seed=0, classes_per_node=k)


def test_dirichlet_large_alpha_is_near_iid() -> None:
    parts = partition(LABELS[:48000], 8, "dirichlet", seed=0, alpha=1e4)
    hist = class_histogram(LABELS, parts, 10)
    assert np.abs(hist / hist.sum(1, keepdims=True) - 0.1).max() < 0.05
    assert sum(p.size for p in parts) == 48000


def test_dirichlet_small_alpha_is_skewed() -> None:
    parts = partition(LABELS, 8, "dirichlet", seed=0, alpha=0.05)
    hist = class_histogram(LABELS, parts, 10)
    proportions = hist / hist.sum(axis=1, keepdims=True)
    # Mean total-variation distance of a node's label mix from uniform: ~0 for IID, ~0.75 here.
    assert (0.5 * np.abs(proportions - 0.1).sum(axis=1)).mean() > 0.5
    assert (1 / (proportions**2).sum(axis=1)).mean() < 4  # effective classes per node, out of 10


def test_dirichlet_fills_empty_nodes() -> None:
    # 100 nodes, 10 classes, tiny α: most nodes would get nothing without the fix-up.
    parts = partition(LABELS[:5000], 100, "dirichlet", seed=2, alpha=1e-3)
    assert all(p.size >= 1 for p in parts)
    assert_valid(parts, 5000)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_dirichlet_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        partition(LABELS, 8, "dirichlet", seed=0, alpha=alpha)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="unknown partition"):
        partition(LABELS, 8, "shards", seed=0)
    with pytest.raises(ConfigError, match="nodes"):
        partition(LABELS, 0, "iid", seed=0)
    with pytest.raises(ConfigError, match="nodes"):
        partition(LABELS[:5], 6, "iid", seed=0)
    with pytest.raises(ConfigError, match="seed"):
        partition(LABELS, 2, "iid", seed=-1)
    with pytest.raises(ConfigError, match="num_classes"):
        partition(LABELS, 2, "iid", seed=0, num_classes=5)


@settings(max_examples=60, deadline=None)
@given(
    num_nodes=st.integers(1, 40),
    alpha=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(40, 600),
)
def test_dirichlet_property(num_nodes: int, alpha: float, seed: int, n: int) -> None:
    labels = np.random.default_rng(seed).integers(0, 10, n)
    parts = partition(labels, num_nodes, "dirichlet", seed=seed, alpha=alpha, num_classes=10)
    assert len(parts) == num_nodes and all(p.size >= 1 for p in parts)
    assert sum(p.size for p in parts) <= n
    assert_valid(parts, n)


def test_validation_split_stratified_and_disjoint() -> None:
    train, val = validation_split(LABELS, 0.1, seed=0)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert np.intersect1d(train, val).size == 0 and train.size + val.size == LABELS.size
    assert np.bincount(LABELS[val], minlength=10).tolist() == [600] * 10
    again = validation_split(LABELS, 0.1, seed=0)
    assert np.array_equal(again[1], val) and not np.array_equal(validation_split(LABELS, 0.1, seed=1)[1], val)


def test_validation_split_zero_and_bad_fraction() -> None:
    train, val = validation_split(LABELS, 0.0, seed=0)
    assert val.size == 0 and np.array_equal(train, np.arange(LABELS.size))
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="fraction"):
            validation_split(LABELS, bad, seed=0)


def test_partition_with_validation_excludes_validation() -> None:
    parts, val = partition_with_validation(LABELS, 8, "classes", seed=0, val_fraction=0.2)
    assert_valid([*parts, val], LABELS.size)
    hist = class_histogram(LABELS, parts, 10)
    assert ((hist > 0).sum(axis=1) == 2).all()
