"""Churn-safe tracking (DESIGN.md §3): per-edge cumulative tracker flows and their rollback.

For Gradient and Momentum Tracking the tracker changes only through edge flows,
``c_i ← c_i + Σ_j W_ij (d_j − d_i)``. Keeping the cumulative flow ``F_ij`` of every edge (with
``F_ji = −F_ij``) gives ``c_i = Σ_j F_ij`` at all times, so ``Σ_i c_i = 0``. When an edge is dropped both
ends subtract their own ``F`` of that edge from ``c`` and reset it: the trackers of the nodes that remain
sum to zero again and they track their own average momentum. Without the rollback the departed node's
share stays in the survivors' trackers as a permanent bias.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from peernet.core.topology import mh_weight


def mh_matrix(n: int, edges: Iterable[tuple[int, int]], alive: Sequence[bool] | None = None,
              dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Metropolis–Hastings W over the edges whose ends are both alive; a dead node keeps only itself.

    Degrees are counted over live edges, as each end would declare them, so W stays symmetric and
    doubly stochastic whatever subset of nodes is alive.
    """
    live = [True] * n if alive is None else list(alive)
    active = [(i, j) for i, j in edges if live[i] and live[j]]
    degree = [0] * n
    for i, j in active:
        degree[i] += 1
        degree[j] += 1
    W = torch.zeros(n, n, dtype=dtype)
    for i, j in active:
        W[i, j] = W[j, i] = mh_weight(degree[i], degree[j])
    W += torch.diag(1.0 - W.sum(dim=1))
    return W


class EdgeFlows:
    """Cumulative tracker flow ``F_e`` of each undirected edge ``e = (i, j)``, ``i < j``, node-stacked tensors."""

    def __init__(self, edges: Sequence[tuple[int, int]], dim: int, dtype: torch.dtype = torch.float64) -> None:
        self.edges: list[tuple[int, int]] = [(min(e), max(e)) for e in edges]
        self.index = {e: k for k, e in enumerate(self.edges)}
        self.left = torch.tensor([i for i, _ in self.edges], dtype=torch.long)
        self.right = torch.tensor([j for _, j in self.edges], dtype=torch.long)
        self.flows = torch.zeros(len(self.edges), dim, dtype=dtype)

    def record(self, d: torch.Tensor, W: torch.Tensor) -> None:
        """Add this round's flows ``W_ij (d_j − d_i)`` for node-stacked ``d (N, P)``."""
        if not self.edges:
            return
        w = W[self.left, self.right].unsqueeze(1).to(d.dtype)
        self.flows += w * (d[self.right] - d[self.left])

    def node_sum(self, n: int) -> torch.Tensor:
        """``Σ_j F_ij`` for every node: equal to its tracker while no flow was rolled back wrongly."""
        out = torch.zeros(n, self.flows.shape[1], dtype=self.flows.dtype)
        out.index_add_(0, self.left, self.flows)
        out.index_add_(0, self.right, -self.flows)
        return out

    def rollback(self, c: torch.Tensor, edge: tuple[int, int]) -> None:
        """Both ends take back their flow of ``edge`` from the trackers ``c (N, P)``; the edge restarts at zero."""
        k = self.index[(min(edge), max(edge))]
        i, j = self.edges[k]
        c[i] -= self.flows[k].to(c.dtype)
        c[j] += self.flows[k].to(c.dtype)
        self.flows[k].zero_()

    def edges_of(self, node: int) -> list[tuple[int, int]]:
        return [e for e in self.edges if node in e]
