"""ClippedGossip: clip is odd bit for bit, a neighbour's pull is bounded by W_ij·τ, rows equal the daemon's mix."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from peernet.core.algorithms import get_algorithm
from peernet.core.clipping import clip_, clip_radii, clipped_mix_one, clipped_mix_rows, pulls
from peernet.core.edges import NodeEdges
from peernet.core.mixing import SparseMixing
from peernet.core.topology import generate

DTYPES = [torch.float32, torch.float64]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), size=st.integers(1, 300), scale=st.floats(1e-3, 1e6),
       tau=st.floats(1e-4, 1e4), double=st.booleans())
def test_clip_is_odd_bit_for_bit_and_within_tau(seed: int, size: int, scale: float, tau: float, double: bool) -> None:
    dtype = torch.float64 if double else torch.float32
    v = torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale
    plus, minus = clip_(v.clone(), tau), clip_(-v, tau)
    assert torch.equal(minus, -plus)  # so the two ends of an edge move by exact opposites
    assert float(torch.linalg.vector_norm(plus.double())) <= tau * (1 + 1e-5)
    if float(torch.linalg.vector_norm(v.double())) <= tau * (1 - 1e-6):
        assert torch.equal(plus, v)  # within the radius nothing changes


@pytest.mark.parametrize("dtype", DTYPES)
def test_pulls_over_an_edge_are_exact_opposites(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    for tau in (1e-3, 0.5, 10.0, 1e9):
        a, b = torch.randn(500, generator=gen, dtype=dtype), 3 * torch.randn(500, generator=gen, dtype=dtype)
        assert torch.equal(pulls(a, {2: b}, tau)[2], -pulls(b, {1: a}, tau)[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_neighbour_moves_a_node_by_at_most_its_weight_times_tau(dtype: torch.dtype) -> None:
    """Whatever neighbour 9 sends, node i ends within W_i9·τ of where a silent 9 (no pull) would leave it."""
    gen = torch.Generator().manual_seed(5)
    own = torch.randn(64, generator=gen, dtype=dtype)
    honest = {j: own + 0.1 * torch.randn(64, generator=gen, dtype=dtype) for j in (2, 5)}
    weights, tau = {2: 0.25, 5: 0.25, 9: 0.25}, 0.3
    without = clipped_mix_one(own, {**pulls(own, honest, tau), 9: torch.zeros_like(own)}, weights)
    for sent in (torch.full_like(own, 1e5), -1e5 * torch.randn(64, generator=gen, dtype=dtype), own + 0.01):
        mixed = clipped_mix_one(own, pulls(own, {**honest, 9: sent}, tau), weights)
        moved = float(torch.linalg.vector_norm((mixed - without).double()))
        assert moved <= weights[9] * tau * (1 + 1e-5) + 1e-6


@pytest.mark.parametrize(("kind", "n"), [("ring", 8), ("random", 12), ("star", 7), ("exponential", 16)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_each_row_is_bit_identical_to_the_daemons_clipped_mix(kind: str, n: int, dtype: torch.dtype) -> None:
    mixing = SparseMixing.of(generate(kind, n, seed=2))
    V = torch.randn(n, 300, dtype=dtype, generator=torch.Generator().manual_seed(n)) * 4
    mixed = clipped_mix_rows(mixing.rows, V, tau=2.0)
    for i in range(n):
        # The daemon's received dict comes in arrival order; the result must not depend on it.
        received = {j: V[j].clone() for j in reversed(list(mixing.rows[i]))}
        own = V[i].clone()
        assert torch.equal(mixed[i], clipped_mix_one(own, pulls(own, received, 2.0), mixing.rows[i]))


def test_with_a_radius_nobody_reaches_it_is_plain_mixing_to_rounding() -> None:
    mixing = SparseMixing.of(generate("torus", 16))
    V = torch.randn(16, 200, dtype=torch.float64)
    assert float((clipped_mix_rows(mixing.rows, V, tau=1e12) - mixing.mix(V)).abs().max()) <= 1e-13
    assert float((clipped_mix_rows(mixing.rows, V, tau=0.1) - mixing.mix(V)).abs().max()) > 0.1


def test_clipped_mixing_keeps_the_sum_over_nodes() -> None:
    """Symmetric W and odd pulls: Σ_i mix(v)_i = Σ_i v_i, the tracker invariant's reason."""
    mixing = SparseMixing.of(generate("random", 20, seed=1))
    V = torch.randn(20, 100, dtype=torch.float64) * 10
    assert float((clipped_mix_rows(mixing.rows, V, tau=0.5).sum(0) - V.sum(0)).abs().max()) <= 1e-12


def test_an_edge_flow_is_recorded_as_what_was_mixed_in() -> None:
    one, two = NodeEdges([2], tracks=True), NodeEdges([1], tracks=True)
    a, b = torch.randn(50, dtype=torch.float64), 7 * torch.randn(50, dtype=torch.float64)
    for _ in range(3):
        one.record_pull(2, 0.25, pulls(a, {2: b}, 0.5)[2])
        two.record_pull(1, 0.25, pulls(b, {1: a}, 0.5)[1])
    assert torch.equal(one.flow[2], -two.flow[1])
    assert float(torch.linalg.vector_norm(one.flow[2])) == pytest.approx(3 * 0.25 * 0.5)
    plain = NodeEdges([2], tracks=True)
    plain.record(2, 0.25, a, b)
    assert torch.equal(plain.flow[2], (b - a) * 0.25)  # unchanged without clipping


def test_clip_radii_per_gossiped_tensor() -> None:
    mt, dsgd = get_algorithm("momentum-tracking"), get_algorithm("dsgd")
    assert clip_radii(mt, None, None) == {} and clip_radii(dsgd, None, None) == {}
    assert clip_radii(mt, 1.0, None) == {"x": 1.0, "d": 1.0}
    assert clip_radii(mt, 1.0, 0.1) == {"x": 1.0, "d": 0.1}
    assert clip_radii(mt, None, 0.1) == {"d": 0.1}
    assert clip_radii(dsgd, 2.0, 0.1) == {"x": 2.0}

