"""ClippedGossip (He, Karimireddy, Jaggi 2022): robust mixing, written once for the simulator and the daemon.

Plain gossip computes ``x_i ← W_ii·x_i + Σ_j W_ij·x_j``, so one neighbour that sends huge values moves node i
as far as it likes. ClippedGossip writes the same mix as a sum of pulls and bounds each pull:

    x_i ← x_i + Σ_j W_ij · clip(x_j − x_i, τ),   clip(v, τ) = v · min(1, τ / ‖v‖₂)

A neighbour can then move node i by at most ``W_ij·τ`` per round and per tensor, whatever it sends. ``clip``
is odd, and bit for bit so (the norm of −v is the norm of v, and (−a)·s = −(a·s) in IEEE arithmetic), so the
pulls of the two ends of an edge are exact opposites: with a symmetric W the flows over every edge cancel and
the tracker sum of Gradient and Momentum Tracking stays exactly where it was (docs/algorithms.md, "Robust
mixing"). That needs the same τ at both ends, so τ is a run setting (``clip_tau``, ``clip_tau_tracker``).

Both callers add the same terms in the same order (own tensor, then each pull in ascending neighbour id, each
one fused multiply-add), so a simulator row equals the daemon's mix bit for bit, as plain mixing does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from peernet.core.algorithms import Algorithm


def clip_(v: torch.Tensor, tau: float) -> torch.Tensor:
    """Scale ``v`` in place to Euclidean norm at most ``tau`` and return it (``v · min(1, τ/‖v‖)``).

    Odd bit for bit: ``clip_(-v) == -clip_(v)``. A non-finite norm is left to the caller: the daemon never mixes
    non-finite values (check_finite drops them first).
    """
    norm = float(torch.linalg.vector_norm(v))
    if norm > tau:
        v.mul_(tau / norm)
    return v


def pulls(own: torch.Tensor, received: Mapping[int, torch.Tensor], tau: float) -> dict[int, torch.Tensor]:
    """``clip(v_j − own, τ)`` for every neighbour ``j``: how far each one pulls this node (before its weight)."""
    return {j: clip_(received[j] - own, tau) for j in sorted(received)}


def clipped_mix_one(own: torch.Tensor, pulled: Mapping[int, torch.Tensor], weights: Mapping[int, float]
                    ) -> torch.Tensor:
    """``own + Σ_j W_ij · pulled_j``, the pulls added in ascending neighbour id (``pulls`` makes them)."""
    out = own.clone()
    for j in sorted(pulled):
        out.add_(pulled[j], alpha=weights[j])
    return out


def clipped_mix_rows(rows: Sequence[Mapping[int, float]], v: torch.Tensor, tau: float) -> torch.Tensor:
    """Node-stacked ``v (N, P)`` mixed row by row with ClippedGossip; ``rows[i]`` maps j to ``W_ij``.

    Each row is computed by :func:`clipped_mix_one` on the same ``(P,)`` values a daemon holds, so it is the
    daemon's result bit for bit (with one torch thread each: the norm is a reduction). The rows cost E·P like
    sparse mixing, in Python-level steps per edge: fine for the clusters run beside daemons, slow for 4,096 nodes.
    """
    out = torch.empty_like(v)
    for i, row in enumerate(rows):
        own = v[i]
        out[i] = clipped_mix_one(own, pulls(own, {j: v[j] for j in row}, tau), row)
    return out


def clip_radii(algorithm: Algorithm, tau: float | None, tau_tracker: float | None) -> dict[str, float]:
    """τ for each tensor ``algorithm`` gossips: ``tau_tracker`` (else ``tau``) for a tracking rule's tracker
    tensor, ``tau`` for the others; a tensor left out is mixed plainly. Empty when clipping is off."""
    radii: dict[str, float] = {}
    for name in algorithm.sent:
        radius = tau_tracker if name == algorithm.flow and tau_tracker is not None else tau
        if radius is not None:
            radii[name] = radius
    return radii
