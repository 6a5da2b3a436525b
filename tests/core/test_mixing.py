"""Sparse mixing equals the dense W product and, row by row, the daemon's per-node mix bit for bit."""

from __future__ import annotations

import pytest
import torch

from peernet.core.mixing import SparseMixing, mix_one
from peernet.core.topology import generate

KINDS = [("ring", 16), ("torus", 16), ("exponential", 32), ("random", 24), ("star", 9), ("hypercube", 16),
         ("ring", 3), ("complete", 6)]


@pytest.mark.parametrize(("kind", "n"), KINDS)
def test_sparse_mixing_equals_dense_mixing(kind: str, n: int) -> None:
    topo = generate(kind, n, seed=4)
    V = torch.randn(n, 257, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    mixing = SparseMixing.of(topo)
    dense = topo.mixing_matrix(dtype=torch.float64) @ V
    assert float((mixing.mix(V) - dense).abs().max()) <= 1e-12
    assert float((mixing.mix_csr(V) - dense).abs().max()) <= 1e-12
    assert float((mixing.mix_csr(V[:, 5:105]) - dense[:, 5:105]).abs().max()) <= 1e-12  # a column block view


@pytest.mark.parametrize(("kind", "n"), KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_row_is_bit_identical_to_mix_one(kind: str, n: int, dtype: torch.dtype) -> None:
    topo = generate(kind, n, seed=4)
    mixing = SparseMixing.of(topo)
    V = torch.randn(n, 300, dtype=dtype)
    mixed = mixing.mix(V)
    for i in range(n):
        # The daemon hands mix_one its neighbours in arrival order; the result must not depend on it.
        received = {j: V[j] for j in reversed(list(mixing.rows[i]))}
        assert torch.equal(mixed[i], mix_one(V[i], received, mixing.rows[i]))


def test_mixing_a_column_block_equals_mixing_the_whole() -> None:
    mixing = SparseMixing.of(generate("exponential", 64))
    V = torch.randn(64, 1000, dtype=torch.float64)
    whole = mixing.mix(V)
    assert torch.equal(torch.cat([mixing.mix(V[:, a:a + 300]) for a in range(0, 1000, 300)], dim=1), whole)


def test_metropolis_rows_with_dead_nodes_are_doubly_stochastic_and_cut_the_dead_off() -> None:
    topo = generate("random", 20, seed=2)
    edges = [(topo.index_of(a), topo.index_of(b)) for a, b in topo.edges]
    alive = [i not in (3, 7) for i in range(20)]
    W = SparseMixing.metropolis(20, edges, alive).dense()
    torch.testing.assert_close(W, W.T, rtol=0, atol=0)
    torch.testing.assert_close(W.sum(dim=1), torch.ones(20, dtype=W.dtype), rtol=0, atol=1e-15)
    assert W[3, 3] == 1.0 and W[7, 7] == 1.0
    assert float(W[3].sum()) == 1.0 and int((W[:, 3] != 0).sum()) == 1
