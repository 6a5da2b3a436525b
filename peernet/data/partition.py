"""Deterministic splits of labelled data over nodes (IID, k classes per node, Dirichlet) and validation."""

from __future__ import annotations

import math

import numpy as np

from peernet.errors import ConfigError

PARTITIONS = ("iid", "classes", "dirichlet")

# Second word of every RNG seed, so each purpose draws from its own stream even with the same run seed.
_STREAM_VALIDATION = 0x5A11D
_STREAM_IID = 0x11D
_STREAM_CLASSES = 0xC1A55
_STREAM_DIRICHLET = 0xD1C1E


def _rng(seed: int, stream: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}", key="seed")
    return np.random.default_rng([int(seed), stream])


def _as_labels(labels: np.ndarray, num_classes: int | None = None) -> tuple[np.ndarray, int]:
    """Labels as a 1-D int64 array plus the number of classes (inferred when not given)."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ConfigError(f"labels must be a 1-D integer array, got shape {arr.shape} of {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise ConfigError("labels must be non-negative")
    top = int(arr.max()) + 1 if arr.size else 0
    if num_classes is None:
        num_classes = top
    elif top > num_classes:
        raise ConfigError(f"labels go up to {top - 1} but num_classes is {num_classes}", key="num_classes")
    return arr, num_classes


def class_histogram(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Samples per (node, class) as an int64 array of shape (len(parts), num_classes)."""
    arr = np.asarray(labels, dtype=np.int64)
    hist = np.zeros((len(parts), num_classes), dtype=np.int64)
    for i, part in enumerate(parts):
        hist[i] = np.bincount(arr[part], minlength=num_classes)[:num_classes]
    return hist


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified held-out split: (train_indices, val_indices), both sorted int64.

    Each class gives round(fraction · its size) samples to validation, but always keeps one for training.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"validation fraction must be in [0, 1), got {fraction}", key="val_fraction")
    arr, num_classes = _as_labels(labels)
    rng = _rng(seed, _STREAM_VALIDATION)
    val: list[np.ndarray] = []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(arr == c))
        take = min(round(fraction * idx.size), max(idx.size - 1, 0))
        val.append(idx[:take])
    val_idx = np.sort(np.concatenate(val)).astype(np.int64) if val else np.empty(0, np.int64)
    train_mask = np.ones(arr.size, dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask).astype(np.int64), val_idx


def partition(
    labels: np.ndarray,
    num_nodes: int,
    scheme: str,
    *,
    seed: int,
    classes_per_node: int = 2,
    alpha: float = 1.0,
    num_classes: int | None = None,
) -> list[np.ndarray]:
    """One sorted int64 index array (into ``labels``) per node; disjoint and deterministic from ``seed``."""
    if scheme not in PARTITIONS:
        raise ConfigError(
            f"unknown partition '{scheme}'; choose one of {', '.join(PARTITIONS)}", key="partition"
        )
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int | np.integer) or num_nodes < 1:
        raise ConfigError(f"number of nodes must be a positive integer, got {num_nodes!r}", key="nodes")
    arr, num_classes = _as_labels(labels, num_classes)
    if arr.size < num_nodes:
        raise ConfigError(
            f"{arr.size} samples cannot give each of {num_nodes} nodes at least one", key="nodes"
        )
    if scheme == "iid":
        parts = _iid(arr, int(num_nodes), seed)
    elif scheme == "classes":
        parts = _classes(arr, int(num_nodes), classes_per_node, num_classes, seed)
    else:
        parts = _dirichlet(arr, int(num_nodes), alpha, num_classes, seed)
    return [np.sort(p).astype(np.int64) for p in parts]


def _iid(labels: np.ndarray, num_nodes: int, seed: int) -> list[np.ndarray]:
    perm = _rng(seed, _STREAM_IID).permutation(labels.size)
    per_node = labels.size // num_nodes
    return [perm[i * per_node : (i + 1) * per_node] for i in range(num_nodes)]


def node_classes(node: int, classes_per_node: int, num_classes: int) -> list[int]:
    """The classes node ``node`` holds in the paper's scheme: (node·k + j) mod C for j < k."""
    return [(node * classes_per_node + j) % num_classes for j in range(classes_per_node)]


def _classes(labels: np.ndarray, num_nodes: int, k: int, num_classes: int, seed: int) -> list[np.ndarray]:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= num_classes:
        raise ConfigError(f"classes per node must be in 1..{num_classes}, got {k!r}", key="classes_per_node")
    rng = _rng(seed, _STREAM_CLASSES)
    holders: list[list[int]] = [[] for _ in range(num_classes)]
    for node in range(num_nodes):
        for c in node_classes(node, int(k), num_classes):
            holders[c].append(node)
    # per_node[i][c]: node i's share of class c, kept per class so truncation can preserve the class mix.
    per_node: list[dict[int, np.ndarray]] = [{} for _ in range(num_nodes)]
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if holders[c]:
            for node, share in zip(holders[c], np.array_split(idx, len(holders[c])), strict=True):
                per_node[node][c] = share
    sizes = [sum(s.size for s in shares.values()) for shares in per_node]
    target = min(sizes)
    if target == 0:
        empty = sizes.index(0)
        raise ConfigError(
            f"node {empty} gets no samples: the data has no examples of its classes "
            f"{node_classes(empty, int(k), num_classes)}",
            key="classes_per_node",
        )
    return [_truncate(shares, target, rng) for shares in per_node]


def _truncate(shares: dict[int, np.ndarray], target: int, rng: np.random.Generator) -> np.ndarray:
    """A random subset of ``target`` samples that keeps the class proportions and every class present.

    Plain random truncation could drop a class from a small node; then it would no longer hold exactly k.
    """
    classes = [c for c in sorted(shares) if shares[c].size]
    counts = np.array([shares[c].size for c in classes], dtype=np.int64)
    if target < len(classes):
        return rng.choice(np.concatenate([shares[c] for c in classes]), size=target, replace=False)
    # One per class first, then the rest by largest remainder in proportion to what is left of each class.
    spare, room = target - len(classes), counts - 1
    quota = room * spare / room.sum() if room.sum() else np.zeros(len(classes))
    alloc = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - alloc), kind="stable")
    alloc[order[: spare - int(alloc.sum())]] += 1
    picks = [
        rng.choice(shares[c], size=int(n) + 1, replace=False) for c, n in zip(classes, alloc, strict=True)
    ]
    return np.concatenate(picks)


def _dirichlet(
    labels: np.ndarray, num_nodes: int, alpha: float, num_classes: int, seed: int
) -> list[np.ndarray]:
    """Label skew: each class is split across nodes by proportions drawn from Dirichlet(α·1).

    A node left empty receives one sample taken from the currently largest node (a random sample of it), so
    every node can train; this moves at most num_nodes − 1 samples and keeps the result deterministic.
    """
    if not isinstance(alpha, int | float | np.floating) or not math.isfinite(alpha) or alpha <= 0:
        raise ConfigError(f"Dirichlet alpha must be a positive finite number, got {alpha!r}", key="alpha")
    rng = _rng(seed, _STREAM_DIRICHLET)
    chunks: list[list[np.ndarray]] = [[] for _ in range(num_nodes)]
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        proportions = rng.dirichlet(np.full(num_nodes, float(alpha)))
        if not np.all(np.isfinite(proportions)):
            # Tiny α can underflow every gamma draw; the limit is one node taking the whole class.
            proportions = np.eye(num_nodes)[rng.integers(num_nodes)]
        cuts = np.round(np.cumsum(proportions)[:-1] * idx.size).astype(np.int64)
        for node, share in enumerate(np.split(idx, cuts)):
            chunks[node].append(share)
    parts = [np.concatenate(ch) if ch else np.empty(0, np.int64) for ch in chunks]
    for node in range(num_nodes):
        if parts[node].size == 0:
            donor = max(range(num_nodes), key=lambda i: parts[i].size)
            pick = int(rng.integers(parts[donor].size))
            parts[node] = parts[donor][pick : pick + 1]
            parts[donor] = np.delete(parts[donor], pick)
    return parts


def partition_with_validation(
    labels: np.ndarray,
    num_nodes: int,
    scheme: str,
    *,
    seed: int,
    val_fraction: float = 0.0,
    classes_per_node: int = 2,
    alpha: float = 1.0,
    num_classes: int | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Hold out a stratified validation split, then partition the rest: (node indices, validation indices).

    All indices point into ``labels``; this is the one place that fixes how the two steps compose.
    """
    train_idx, val_idx = validation_split(labels, val_fraction, seed)
    arr = np.asarray(labels)
    parts = partition(
        arr[train_idx],
        num_nodes,
        scheme,
        seed=seed,
        classes_per_node=classes_per_node,
        alpha=alpha,
        num_classes=num_classes,
    )
    return [train_idx[p] for p in parts], val_idx
