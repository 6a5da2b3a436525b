"""Gossip mixing for one node from its neighbours' tensors, shared by the per-node simulator and the daemon."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def mix_one(own: torch.Tensor, received: Mapping[int, torch.Tensor], weights: Mapping[int, float]) -> torch.Tensor:
    """Return ``W_ii·own + Σ_j W_ij·v_j`` with ``W_ii = 1 − Σ_j W_ij`` over the neighbours present.

    Neighbours are visited in sorted id order so every caller (simulator loop, daemon) adds the same
    terms in the same order and gets bit-identical results. The self weight is derived from the
    weights actually used, which keeps the row stochastic when a neighbour is excluded.
    """
    self_weight = 1.0 - sum(weights[j] for j in received)
    out = own * self_weight
    for j in sorted(received):
        out.add_(received[j], alpha=weights[j])
    return out


def consensus_distance(stacked: torch.Tensor) -> float:
    """Mean over nodes of ‖x_i − x̄‖² for node-stacked parameters ``(N, P)``."""
    mean = stacked.mean(dim=0, keepdim=True)
    return float(((stacked - mean) ** 2).sum(dim=1).mean())
