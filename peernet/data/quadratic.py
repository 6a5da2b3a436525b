"""Synthetic heterogeneous least squares with a known global optimum, for exactness tests.

Node i holds ``f_i(x) = ‖A_i x − b_i‖² / (2m)`` with ``b_i = A_i (x₀ + h·ζ_i)``: every node's own
optimum is pulled ``h·ζ_i`` away from a shared point, so ``h`` (heterogeneity) sets how much the local
problems disagree. With coupled weight decay λ the network's problem is
``min_x Σ_i f_i(x) + N·λ‖x‖²/2``, whose minimiser is computed exactly in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from peernet.errors import ConfigError


@dataclass(frozen=True)
class QuadraticProblem:
    """Stacked per-node data ``A (N, m, d)``, ``b (N, m)`` and the exact global optimum."""

    A: torch.Tensor
    b: torch.Tensor
    optimum: torch.Tensor
    heterogeneity: float

    @property
    def nodes(self) -> int:
        return int(self.A.shape[0])

    @property
    def dim(self) -> int:
        return int(self.A.shape[2])

    @property
    def rows(self) -> int:
        return int(self.A.shape[1])

    def losses_and_grads(self, X: torch.Tensor, nodes: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact local losses ``(k,)`` and gradients ``(k, d)`` at node-stacked points ``X (k, d)``."""
        A = self.A if nodes is None else self.A[nodes]
        b = self.b if nodes is None else self.b[nodes]
        X = X.to(A.dtype)
        residual = torch.einsum("nmd,nd->nm", A, X) - b
        losses = 0.5 * (residual**2).sum(dim=1) / self.rows
        grads = torch.einsum("nmd,nm->nd", A, residual) / self.rows
        return losses, grads

    def distance_to_optimum(self, X: torch.Tensor, nodes: list[int] | None = None,
                            optimum: torch.Tensor | None = None) -> float:
        """max_i ‖x_i − x*‖ / ‖x*‖ over the given nodes (all by default)."""
        target = self.optimum if optimum is None else optimum
        rows = X if nodes is None else X[nodes]
        dist = torch.linalg.vector_norm(rows.to(target.dtype) - target, dim=1) / torch.linalg.vector_norm(target)
        return float(dist.max())

    def optimum_of(self, nodes: list[int], weight_decay: float) -> torch.Tensor:
        """Exact minimiser of ``Σ_{i∈nodes} f_i + |nodes|·λ‖x‖²/2`` (e.g. the survivors after a crash)."""
        return _solve(self.A[nodes], self.b[nodes], weight_decay)


def _solve(A: torch.Tensor, b: torch.Tensor, weight_decay: float) -> torch.Tensor:
    n, m, d = A.shape
    hessian = torch.einsum("nmd,nme->de", A, A) / m + n * weight_decay * torch.eye(d, dtype=A.dtype)
    rhs = torch.einsum("nmd,nm->d", A, b) / m
    return torch.linalg.solve(hessian, rhs)


def make_quadratic(nodes: int, *, dim: int = 10, rows: int = 20, heterogeneity: float = 1.0,
                   weight_decay: float = 1e-3, seed: int = 0) -> QuadraticProblem:
    """Build the problem deterministically from ``seed`` (float64 throughout)."""
    if nodes < 1:
        raise ConfigError(f"need at least one node, got {nodes}", key="nodes")
    if dim < 1 or rows < 1:
        raise ConfigError(f"dim and rows must be >= 1, got dim={dim}, rows={rows}", key="dim")
    if heterogeneity < 0:
        raise ConfigError(f"must be >= 0, got {heterogeneity}", key="heterogeneity")
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(nodes, rows, dim, generator=gen, dtype=torch.float64)
    shared = torch.randn(dim, generator=gen, dtype=torch.float64)
    offsets = torch.randn(nodes, dim, generator=gen, dtype=torch.float64)
    # Centre the offsets so heterogeneity moves the nodes apart, not the network's optimum away.
    offsets -= offsets.mean(dim=0, keepdim=True)
    local_optima = shared + heterogeneity * offsets
    b = torch.einsum("nmd,nd->nm", A, local_optima)
    optimum = _solve(A, b, weight_decay)
    return QuadraticProblem(A=A, b=b, optimum=optimum, heterogeneity=heterogeneity)
