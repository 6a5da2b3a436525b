"""Tests for the spectral gap and diameter at scale: sparse equals dense, bounded search equals all-pairs BFS."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from peernet.core import topology_metrics as metrics
from peernet.core.topology import GENERATORS, NodeSpec, Topology, generate
from peernet.core.topology_metrics import Diameter, arpack_gap, dense_gap
from peernet.errors import TopologyError
from tests.core import topology_reference as ref

SPARSE_CASES = [("ring", 300), ("ring", 2000), ("torus", 600), ("torus", 1200), ("hypercube", 256),
                ("hypercube", 1024), ("exponential", 500), ("exponential", 1000), ("random", 400), ("random", 1000)]


@pytest.mark.parametrize(("kind", "n"), SPARSE_CASES)
def test_sparse_gap_equals_dense(kind: str, n: int) -> None:
    t = generate(kind, n, seed=3)
    dense = t.spectral_gap()  # auto is dense eigvalsh up to DENSE_GAP_MAX nodes
    assert n > metrics.DENSE_GAP_MAX // 2 or dense == ref.gap(t)  # the figures peernet printed before, unchanged
    assert t.spectral_gap("sparse") == pytest.approx(dense, abs=1e-6)
    assert t.spectral_gap("arpack") == pytest.approx(dense, abs=1e-6)


def test_sparse_gap_equals_dense_on_tiny_graphs() -> None:
    # Includes W = 11ᵀ/n (complete graphs), on which ARPACK's Krylov space collapses at once.
    for kind in GENERATORS:
        for n in (1, 2, 3, 4, 5, 8, 9, 12):
            if (kind == "hypercube" and n & (n - 1)) or (kind == "torus" and n not in (1, 9, 12)):
                continue
            t = generate(kind, n, seed=2)
            for method in ("sparse", "arpack"):
                assert t.spectral_gap(method) == pytest.approx(t.spectral_gap(), abs=1e-7), (kind, n, method)


def test_exact_transform_paths_are_taken_and_agree_to_rounding() -> None:
    for kind, n, transform in (("ring", 64, "fft"), ("exponential", 100, "fft"), ("torus", 12 * 15, "fft2"),
                               ("hypercube", 128, "walsh")):
        t = generate(kind, n)
        assert t._weighted_symmetry().transform() == transform
        assert t.spectral_gap("sparse") == pytest.approx(t.spectral_gap("dense"), abs=1e-12)


def _explicit(t: Topology, seed: int, scale: float = 1.0) -> Topology:
    """``t`` with random symmetric explicit weights (self weights derived: rows sum to 1)."""
    rng = np.random.default_rng(seed)
    top = scale / (1 + t.degree_range()[1])
    triples = [(a, b, float(rng.uniform(0.1, 1.0) * top)) for a, b in t.edges]
    return Topology(nodes=t.nodes, edges=t.edges, weights="explicit", explicit=triples)


@pytest.mark.parametrize(("kind", "n"), [("random", 300), ("torus", 400), ("ring", 200)])
def test_sparse_gap_equals_dense_with_explicit_weights(kind: str, n: int) -> None:
    t = _explicit(generate(kind, n, seed=1), seed=n)
    assert t._weighted_symmetry().transform() is None  # random weights break every translation symmetry
    assert t.spectral_gap("sparse") == pytest.approx(t.spectral_gap("dense"), abs=1e-6)


def test_explicit_weights_that_keep_a_symmetry_use_the_exact_transform() -> None:
    ring = generate("ring", 90)
    t = Topology(nodes=ring.nodes, edges=ring.edges, weights="explicit",
                 explicit=[(a, b, 0.3) for a, b in ring.edges])
    assert t._weighted_symmetry().transform() == "fft"
    assert t.spectral_gap("sparse") == pytest.approx(t.spectral_gap("dense"), abs=1e-12)
    broken = [(a, b, 0.3 if (a, b) != (0, 1) else 0.2) for a, b in ring.edges]
    u = Topology(nodes=ring.nodes, edges=ring.edges, weights="explicit", explicit=broken)
    assert u._weighted_symmetry().transform() is None
    assert u.spectral_gap("sparse") == pytest.approx(u.spectral_gap("dense"), abs=1e-6)


def test_shift_invert_handles_a_most_negative_eigenvalue() -> None:
    # K_{40,40} with self weights 0.02: eigenvalues 1, 0.02 and -0.96, so the gap (0.04) comes from the bottom.
    side = 40
    edges = [(i, side + j) for i in range(side) for j in range(side)]
    t = Topology(nodes=tuple(NodeSpec(i) for i in range(2 * side)), edges=edges, weights="explicit",
                 explicit=[(i, j, 0.98 / side) for i, j in edges])
    w = t.mixing_csr()
    assert dense_gap(w.toarray()) == pytest.approx(0.04, abs=1e-12)
    assert metrics._shift_invert_gap(w.tocsc(), t._self_weights) == pytest.approx(0.04, abs=1e-8)


def test_arpack_that_does_not_converge_says_so() -> None:
    t = generate("ring", 400)
    with pytest.raises(TopologyError, match=r"ARPACK .*did not converge in 1 restarts"):
        arpack_gap(t._offdiag, t._self_weights, restarts=1, shift_invert=False)
    assert arpack_gap(t._offdiag, t._self_weights, restarts=1) == pytest.approx(t.spectral_gap(), abs=1e-8)


def test_unknown_gap_method() -> None:
    with pytest.raises(TopologyError, match="unknown method 'eig'"):
        generate("ring", 5).spectral_gap("eig")


def test_dense_matrix_is_refused_above_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from peernet.core import topology

    monkeypatch.setattr(topology, "DENSE_MAX_BYTES", 8 * 100 * 100)
    assert generate("ring", 100).mixing_matrix().shape == (100, 100)
    with pytest.raises(TopologyError, match=r"a dense mixing matrix of 101 nodes takes 0\.0 GiB"):
        generate("ring", 101).mixing_matrix()
    assert generate("ring", 101).spectral_gap("sparse") > 0  # the sparse paths never need it


# -- diameter ------------------------------------------------------------------------------------------------


def _random_file_graph(rng: random.Random, n: int, extra: int) -> Topology:
    """A connected graph on scattered ids, as a hand-written file might hold: a random tree plus extra edges."""
    ids = rng.sample(range(10 * n), n)
    edges = {tuple(sorted((ids[i], ids[rng.randrange(i)]))) for i in range(1, n)}
    while len(edges) < n - 1 + extra and len(edges) < n * (n - 1) // 2:
        a, b = rng.sample(ids, 2)
        edges.add((min(a, b), max(a, b)))
    return Topology(nodes=tuple(NodeSpec(i) for i in ids), edges=[list(e) for e in edges])


def test_diameter_equals_all_pairs_bfs_on_generated_graphs() -> None:
    for kind, sizes in (("ring", (2, 3, 7, 50, 131)), ("torus", (9, 12, 35, 100)), ("hypercube", (2, 4, 64)),
                        ("exponential", (5, 33, 100)), ("complete", (2, 6)), ("star", (2, 9)),
                        ("random", (5, 40, 150))):
        for n in sizes:
            t = generate(kind, n, seed=n)
            found = t.diameter_bounds()
            assert found.exact and t.diameter() == ref.diameter(t), (kind, n)


def test_diameter_equals_all_pairs_bfs_on_graphs_without_symmetry() -> None:
    rng = random.Random(5)
    for case in range(40):
        n = rng.randrange(2, 120)
        t = _random_file_graph(rng, n, extra=rng.choice([0, 1, n // 4, n]))
        assert t.diameter() == ref.diameter(t), case
    path = Topology(nodes=tuple(NodeSpec(i) for i in range(300)), edges=[(i, i + 1) for i in range(299)])
    assert path.diameter() == 299  # deeper than the level loop: pointer doubling


def test_a_permuted_ring_has_no_symmetry_but_an_exact_diameter() -> None:
    order = list(range(200))
    random.Random(1).shuffle(order)
    t = Topology(nodes=tuple(NodeSpec(i) for i in range(200)),
                 edges=[(order[i], order[(i + 1) % 200]) for i in range(200)])
    assert t._symmetry.orbits().size == 200
    assert t.diameter() == 100


def test_out_of_budget_search_reports_labelled_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    t = generate("random", 300, seed=2)
    truth = ref.diameter(t)
    one = t.diameter_bounds(max_bfs=1)
    assert not one.exact and one.lower <= truth <= one.upper and one.bfs == 1
    assert str(one) == f"{one.lower}–{one.upper} (bounds; exact search stopped after 1 BFS)"
    assert one.as_json() == {"diameter": None, "diameter_bounds": [one.lower, one.upper]}
    monkeypatch.setattr(metrics, "EXACT_DIAMETER_MAX", 10)
    monkeypatch.setattr(metrics, "DIAMETER_WORK", 1)
    u = generate("random", 300, seed=2)
    with pytest.raises(TopologyError, match=r"diameter: only bounds are known, \d+–\d+ \(bounds;"):
        u.diameter()
    assert not u.diameter_bounds().exact


def test_diameter_result_forms() -> None:
    exact = Diameter(4, 4, 1)
    assert (exact.exact, exact.value, str(exact)) == (True, 4, "4")
    assert exact.as_json() == {"diameter": 4, "diameter_bounds": [4, 4]}


def test_small_graph_search_has_no_budget() -> None:
    t = _random_file_graph(random.Random(9), 400, extra=40)
    found: Any = t.diameter_bounds()
    assert found.exact and found.value == ref.diameter(t)
