"""Tests for the vectorised edge validation: the same canonical edges and the same messages as the careful path."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from peernet.core import topology_check
from peernet.core.topology_check import _canonical_edges, _check_connected, canonical_edge_arrays
from peernet.errors import TopologyError


def _both(raw: Any, ids: tuple[int, ...]) -> tuple[Any, Any]:
    """(fast result or error text, careful result or error text)."""
    out = []
    for fn in (lambda: canonical_edge_arrays(raw, ids)[0], lambda: _canonical_edges(raw, set(ids))):
        try:
            out.append(fn())
        except TopologyError as exc:
            out.append(str(exc))
    return out[0], out[1]


def test_fast_path_equals_the_careful_one_on_random_inputs() -> None:
    rng = random.Random(4)
    for _ in range(200):
        n = rng.randrange(1, 30)
        ids = tuple(sorted(rng.sample(range(100), n))) if rng.random() < 0.5 else tuple(range(n))
        pairs = [tuple(rng.sample(ids, 2)) if n > 1 else (ids[0], ids[0]) for _ in range(rng.randrange(0, 40))]
        if rng.random() < 0.3 and pairs:  # inject a defect: self-loop, unknown node, duplicate or bad type
            k = rng.randrange(len(pairs))
            pairs[k] = rng.choice([(ids[0], ids[0]), (ids[0], 999), pairs[0][::-1], (ids[0], "1"), (True, ids[0])])
        raw = [list(p) if rng.random() < 0.5 else p for p in pairs]
        fast, careful = _both(raw if rng.random() < 0.5 else tuple(raw), ids)
        assert fast == careful, (raw, ids)


def test_index_arrays_point_at_the_edge_ends() -> None:
    ids = (3, 7, 10, 42)
    edges, lo, hi = canonical_edge_arrays([[42, 3], [7, 10], [3, 7]], ids)
    assert edges == ((3, 7), (3, 42), (7, 10))
    assert [(ids[a], ids[b]) for a, b in zip(lo.tolist(), hi.tolist(), strict=True)] == list(edges)


def test_arrays_and_canonical_tuples_are_taken_as_they_are() -> None:
    ids = tuple(range(5))
    edges, lo, _ = canonical_edge_arrays(np.array([[0, 1], [1, 2], [3, 4], [2, 3]]), ids)
    assert edges == ((0, 1), (1, 2), (2, 3), (3, 4)) and lo.tolist() == [0, 1, 2, 3]
    same, _, _ = canonical_edge_arrays(edges, ids)
    assert same is edges  # a Topology copied with dataclasses.replace keeps its tuple
    with pytest.raises(TopologyError, match=r"edge \[1, 1\] is a self-loop"):
        canonical_edge_arrays(np.array([[0, 1], [1, 1]]), ids)


@pytest.mark.parametrize("scipy_edges", [0, 50_000])
def test_disconnected_message_is_the_same_on_both_paths(scipy_edges: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topology_check, "_SCIPY_EDGES", scipy_edges)
    ids = tuple(range(12))
    lo, hi = np.array([0, 1, 4, 5, 6, 8]), np.array([1, 2, 5, 6, 7, 9])
    with pytest.raises(TopologyError) as info:
        _check_connected(ids, lo, hi)
    assert str(info.value) == ("key 'edges': graph is disconnected: node 3 cannot be reached from node 0 (6 "
                               "components: [0, 1, 2]; [3]; [4, 5, 6, 7]; [8, 9]; ...)")
    _check_connected((5,), np.array([], dtype=np.int64), np.array([], dtype=np.int64))
