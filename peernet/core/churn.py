"""Churn-safe tracking in the simulator: per-edge tracker flows, kept implicitly, and their rollback.

For Gradient and Momentum Tracking the tracker changes only through edge flows,
``c_i ← c_i + Σ_j W_ij (d_j − d_i)``, so ``c_i = Σ_j F_ij`` with ``F_ij`` the cumulative flow over edge
(i, j) and ``F_ji = −F_ij``. When an edge is dropped both ends subtract their own ``F`` of that edge from
``c`` and reset it: the trackers of the nodes that remain sum to zero again and they track their own
average momentum. Without the rollback the departed node's share stays in the survivors' trackers.

Storing every ``F_ij`` costs E·P memory and work every round. Between two changes of W an edge's weight
is constant, so ``F_ij = w_ij·(A_j − A_i) + B_ij`` with ``A_i = Σ_t d_i(t)`` one running sum per node and
``B_ij`` a correction that is non-zero only for edges whose weight changed (kept sparsely): N·P memory,
one add per round, and the flows themselves are computed only when a node actually leaves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import torch

from peernet.core.mixing import SparseMixing

Edge = tuple[int, int]


def mh_matrix(n: int, edges: Iterable[tuple[int, int]], alive: Sequence[bool] | None = None,
              dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The dense Metropolis–Hastings W over live edges (tests and small graphs; the simulator stays sparse)."""
    return SparseMixing.metropolis(n, edges, alive).dense(dtype)


class Stack(Protocol):
    """Node-stacked storage indexed by node: ``stack[i]`` is node i's row; ``block(k)`` a column block."""

    def __getitem__(self, key: int) -> torch.Tensor: ...

    def __setitem__(self, key: int, value: torch.Tensor) -> None: ...

    def block(self, k: int) -> torch.Tensor: ...

    @property
    def shape(self) -> tuple[int, int]: ...


class EdgeFlows:
    """Cumulative tracker flows ``F_e`` of the undirected edges ``e = (i, j)``, ``i < j``, of node-stacked trackers."""

    def __init__(self, mixing: SparseMixing, sums: Stack) -> None:
        self.sums = sums  # A_i = Σ_t d_i(t), all zero at the start; the caller chooses the storage
        self.weights: dict[Edge, float] = {}
        self.offsets: dict[Edge, torch.Tensor] = {}
        self._set_weights(mixing)

    def _set_weights(self, mixing: SparseMixing) -> None:
        self.weights = {(i, j): w for i, row in enumerate(mixing.rows) for j, w in row.items() if i < j}

    @property
    def edges(self) -> list[Edge]:
        """Edges that carry or carried a flow."""
        return sorted(set(self.weights) | set(self.offsets))

    def record(self, d: torch.Tensor, block: int) -> None:
        """Account for a round in which ``d`` (column block ``block`` of every node) was mixed with the current W."""
        self.sums.block(block).add_(d)

    def flow(self, edge: Edge) -> torch.Tensor:
        """``F_ij`` for ``edge = (i, j)`` with ``i < j``: what flowed from j into i's tracker."""
        i, j = edge
        out = (self.sums[j] - self.sums[i]) * self.weights.get(edge, 0.0)
        if edge in self.offsets:
            out += self.offsets[edge]
        return out

    def node_sum(self, n: int) -> torch.Tensor:
        """``Σ_j F_ij`` for every node: equal to its tracker while no flow was rolled back wrongly."""
        ref = self.sums[0]
        out = torch.zeros(n, self.sums.shape[1], dtype=ref.dtype, device=ref.device)
        for i, j in self.edges:
            f = self.flow((i, j))
            out[i] += f
            out[j] -= f
        return out

    def reweight(self, mixing: SparseMixing) -> None:
        """W changes from now on: fold each changed edge's flow so far into its correction."""
        old = self.weights
        self._set_weights(mixing)
        for edge in set(old) | set(self.weights):
            w_old, w_new = old.get(edge, 0.0), self.weights.get(edge, 0.0)
            if w_old != w_new:
                i, j = edge
                self.offsets[edge] = self.offsets.get(edge, 0.0) + (self.sums[j] - self.sums[i]) * (w_old - w_new)

    def rollback(self, c: Stack, edge: Edge) -> None:
        """Both ends take back their flow of ``edge`` from the trackers ``c (N, P)``; the edge restarts at zero."""
        i, j = min(edge), max(edge)
        f = self.flow((i, j))
        c[i] = c[i] - f
        c[j] = c[j] + f
        self.offsets[(i, j)] = -(self.sums[j] - self.sums[i]) * self.weights.get((i, j), 0.0)

    def edges_of(self, node: int) -> list[Edge]:
        return [e for e in self.weights if node in e]
