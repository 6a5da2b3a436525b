"""Tests for translation-symmetry detection: the right automorphisms are found, and only true ones."""

from __future__ import annotations

import random

import numpy as np

from peernet.core.topology import NodeSpec, Topology, generate
from peernet.core.topology_symmetry import Symmetry, find_symmetry, invariant, weighted
from tests.core import topology_reference as ref


def _sym(t: Topology) -> Symmetry:
    return find_symmetry(t.n, *t._ends)


def test_generated_graphs_have_their_translations() -> None:
    assert _sym(generate("ring", 30)) == Symmetry(30, 1, False, ())
    assert _sym(generate("exponential", 40)).shift == 1
    torus = _sym(generate("torus", 4 * 6))
    assert (torus.shift, torus.block, torus.transform()) == (6, True, "fft2")
    cube = _sym(generate("hypercube", 32))
    assert cube.xor_bits == (0, 1, 2, 3, 4) and cube.transform() == "walsh"
    assert _sym(generate("star", 10)) == Symmetry(10, 10, False, ())


def test_one_orbit_for_vertex_transitive_kinds_and_one_per_node_without_symmetry() -> None:
    for kind, n in (("ring", 30), ("exponential", 40), ("torus", 24), ("hypercube", 32), ("complete", 7)):
        assert _sym(generate(kind, n)).orbits().tolist() == [0], kind
    assert _sym(generate("star", 9)).orbits().size == 9  # the hub is fixed: no translation fits
    assert _sym(generate("random", 50, seed=1)).orbits().size == 50


def test_partial_symmetry_gives_orbits_of_equal_eccentricity() -> None:
    # Two rings of 6 joined by the chords i - i+6 at even i: swapping the rings (shift by 6) is an automorphism,
    # rotating them (shift by 1, or by 1 inside each block of 6) is not.
    n = 12
    edges = {(min(i, (i + 1) % 6), max(i, (i + 1) % 6)) for i in range(6)}
    edges |= {(6 + min(i, (i + 1) % 6), 6 + max(i, (i + 1) % 6)) for i in range(6)}
    edges |= {(i, i + 6) for i in range(0, 6, 2)}
    t = Topology(nodes=tuple(NodeSpec(i) for i in range(n)), edges=sorted(edges))
    sym = _sym(t)
    assert (sym.shift, sym.block, sym.transform()) == (6, False, None)
    assert sym.orbits().tolist() == [0, 1, 2, 3, 4, 5]
    assert t.diameter() == ref.diameter(t)


def test_invariant_rejects_near_misses_and_checks_weights() -> None:
    t = generate("ring", 20)
    lo, hi = t._ends
    i = np.arange(20)
    assert invariant((i + 3) % 20, lo, hi)
    assert not invariant(i[::-1].copy() ^ 0, lo[:-1], hi[:-1])  # drop an edge: reflection no longer fits
    w = np.full(len(lo), 0.3)
    assert invariant((i + 1) % 20, lo, hi, w, np.full(20, 0.4))
    w[5] = 0.2
    assert not invariant((i + 1) % 20, lo, hi, w, np.full(20, 0.4))
    assert weighted(_sym(t), lo, hi, w, np.full(20, 0.4)).transform() is None


def test_random_relabelling_loses_the_symmetry_but_keeps_a_valid_answer() -> None:
    order = list(range(64))
    random.Random(3).shuffle(order)
    ring = generate("ring", 64)
    t = Topology(nodes=ring.nodes, edges=[(order[a], order[b]) for a, b in ring.edges])
    sym = _sym(t)
    for perm in sym.generators():  # whatever was found is a true automorphism
        assert invariant(perm, *t._ends)
