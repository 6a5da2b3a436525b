"""Tests for the vectorised generators: equal to the scalar originals, the random graph's two methods, size caps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from peernet.core import topology_gen
from peernet.core.topology import generate
from peernet.core.topology_gen import (
    GENERATORS,
    MAX_GENERATED_EDGES,
    SplitMix64,
    _below_many,
    _det_log,
    generator_array,
    generator_edges,
    torus_shape,
)
from peernet.errors import TopologyError
from tests.core import topology_reference as ref


@pytest.mark.parametrize("kind", [k for k in GENERATORS if k != "random"])
def test_deterministic_kinds_equal_the_scalar_generators(kind: str) -> None:
    for n in [*range(1, 50), 64, 81, 100, 128, 255, 256]:
        try:
            shape = torus_shape(n) if kind == "torus" else (1, 1)
            if kind == "hypercube" and n & (n - 1):
                continue
        except TopologyError:
            continue
        assert generator_edges(kind, n) == ref.edges_of(kind, n, shape), (kind, n)


@pytest.mark.parametrize("seed", [0, 1, 7, 2**63 + 5, -3])
def test_random_equals_the_scalar_generator_bit_for_bit(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topology_gen, "_PAIR_CHUNK", 97)  # many batches, boundaries inside rows and at tree pairs
    for n in (1, 2, 3, 4, 10, 57, 200, 401):
        assert generator_edges("random", n, seed) == ref.random_edges(n, seed), (n, seed)


def test_random_default_batches_equal_the_scalar_generator() -> None:
    assert generator_edges("random", 300, 11) == ref.random_edges(300, 11)


def test_vectorised_below_skips_rejected_draws_like_the_scalar_one() -> None:
    # k just above 2**63 rejects about half the draws: the vectorised stream must retry exactly as below() does.
    bounds = np.array([2**63 + 1, 5, 2**63 + 12345, 3, 2**63 + 1, 7] * 20, dtype=np.uint64)
    values, used = _below_many(42, 3, bounds)
    rng = SplitMix64(42)
    for _ in range(3):
        rng.next_u64()
    assert values.tolist() == [rng.below(int(k)) for k in bounds]
    assert used > 3 + len(bounds)  # some draws were rejected
    check = SplitMix64(42)
    for _ in range(used):
        check.next_u64()
    assert check.state == rng.state


def test_deterministic_log_is_accurate() -> None:
    x = np.concatenate([np.geomspace(2.0**-53, 1.0, 5001), np.array([1.0, 0.5, 2.0**-53, 1 - 2.0**-53])])
    assert np.allclose(_det_log(x), np.log(x), rtol=4e-16, atol=1e-16)


def test_geometric_random_graphs_are_connected_seeded_and_have_the_right_density(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topology_gen, "RANDOM_PAIRWISE_MAX", 50)
    n = 400
    p = 2 * math.log(n) / n
    extra_pairs = n * (n - 1) // 2 - (n - 1)
    counts = []
    for seed in range(5):
        t = generate("random", n, seed=seed)  # Topology validates that it is connected
        assert t.edges == generate("random", n, seed=seed).edges
        counts.append(len(t.edges) - (n - 1))
    sigma = math.sqrt(extra_pairs * p * (1 - p))
    assert abs(np.mean(counts) - extra_pairs * p) < 3 * sigma  # mean of five: well inside
    assert len(set(counts)) > 1
    monkeypatch.setattr(topology_gen, "RANDOM_PAIRWISE_MAX", 8192)
    assert generate("random", n, seed=0).edges != generate("random", n, seed=1).edges


def test_geometric_random_graph_at_a_larger_size_is_sorted_and_simple() -> None:
    edges = generator_array("random", 20_000, 5)
    assert (edges[:, 0] < edges[:, 1]).all()
    keys = edges[:, 0] * 20_000 + edges[:, 1]
    assert (np.diff(keys) > 0).all()
    expected = topology_gen.edge_count("random", 20_000)
    assert abs(len(edges) - expected) < 5 * math.sqrt(expected)


@pytest.mark.parametrize(("kind", "n", "phrases"), [
    ("complete", 4097, ("complete: 4,097 nodes would give 8,390,656 edges", "8,388,608", "GiB")),
    ("random", 2_000_000, ("random: 2,000,000 nodes would give about", "sparser graph")),
    ("ring", MAX_GENERATED_EDGES + 1, ("ring: 8,388,609 nodes",)),
])
def test_oversized_graphs_are_refused_with_their_cost(kind: str, n: int, phrases: tuple[str, ...]) -> None:
    with pytest.raises(TopologyError) as info:
        generator_array(kind, n)
    for phrase in phrases:
        assert phrase in str(info.value)


def test_complete_graph_at_the_cap_is_generated() -> None:
    assert topology_gen.edge_count("complete", 4096) <= MAX_GENERATED_EDGES
    assert len(generator_array("complete", 300)) == 300 * 299 // 2


def test_size_errors_come_before_the_cap() -> None:
    with pytest.raises(TopologyError, match="power-of-two"):
        generator_array("hypercube", 3 * 2**30)
