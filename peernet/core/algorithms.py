"""The six decentralized optimizers of docs/design.md §1, each written once over flat tensors.

A rule never talks to the network or to other nodes directly: it receives a *gossip* callable from its
caller, hands it the named tensors it wants mixed, and gets back ``mix(v)_i = Σ_j W_ij v_j`` for each.
The simulator passes a gossip that mixes node-stacked ``(N, P)`` column blocks over each node's neighbour
list (``peernet.core.mixing.SparseMixing``); the daemon
passes one that sends the tensors to the node's neighbours, waits for theirs and mixes them. All
arithmetic below is elementwise, so the same code works on ``(P,)`` and ``(N, P)`` tensors, and any
difference between simulator and daemon can only come from the transport.

State is a plain ``dict[str, Tensor]`` (momentum, tracker, ...) that the rule updates in place; every
entry starts at zero (docs/design.md §1: zero initialisation keeps the tracking invariant exact). The tracking
rules can instead start from the average of their first momentum (:meth:`MomentumTracking.start_step`, with the
rounds of peernet.core.tracker_start), as the authors' reference code does.

Every rule is *transactional*: it never writes ``x`` and writes its state only after its gossip returned.
A daemon's gossip raises when the round is abandoned (told to stop, or the node must catch up); the node
then still holds the round's starting point untouched, with no copy of it taken every round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from peernet.errors import AlgorithmError

Tensor = torch.Tensor
Gossip = Callable[..., dict[str, Tensor]]
"""``gossip(x=..., d=...)`` returns ``{"x": mix(x), "d": mix(d)}`` for the tensors it was given."""


@dataclass(frozen=True)
class HyperParams:
    """Step size η, momentum β and coupled weight decay λ (g ← g + λx)."""

    lr: float
    beta: float = 0.9
    weight_decay: float = 1e-3

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise AlgorithmError(f"step size must be > 0, got {self.lr}")
        if not 0 <= self.beta < 1:
            raise AlgorithmError(f"momentum beta must be in [0, 1), got {self.beta}")
        if self.weight_decay < 0:
            raise AlgorithmError(f"weight decay must be >= 0, got {self.weight_decay}")


class Algorithm:
    """One decentralized optimizer: its state names, the tensors it gossips, and one round's update."""

    name: str = ""
    state_names: tuple[str, ...] = ()
    sent: tuple[str, ...] = ()
    #: Tracking methods keep a tracker that changes only by edge flows (docs/algorithms.md, churn).
    tracks: bool = False
    #: For tracking methods: the state entry that is the tracker, and the sent tensor whose mixing is its flow.
    tracker: str = ""
    flow: str = ""

    def init_state(self, x: Tensor) -> dict[str, Tensor]:
        """Zero state shaped like ``x`` (which may be node-stacked)."""
        return {k: torch.zeros_like(x) for k in self.state_names}

    def step(self, x: Tensor, state: dict[str, Tensor], grad: Tensor, hp: HyperParams,
             gossip: Gossip) -> Tensor:
        """Run one round and return the new parameters. ``grad`` excludes weight decay."""
        raise NotImplementedError

    @staticmethod
    def _decayed(x: Tensor, grad: Tensor, hp: HyperParams) -> Tensor:
        return grad + hp.weight_decay * x if hp.weight_decay else grad


class DSGD(Algorithm):
    """x ← mix(x − ηg)."""

    name = "dsgd"
    sent = ("x",)

    def step(self, x: Tensor, state: dict[str, Tensor], grad: Tensor, hp: HyperParams,
             gossip: Gossip) -> Tensor:
        g = self._decayed(x, grad, hp)
        return gossip(x=x - hp.lr * g)["x"]


class DSGDm(Algorithm):
    """u ← βu + g ; x ← mix(x − ηu)."""

    name = "dsgdm"
    state_names = ("u",)
    sent = ("x",)

    def step(self, x: Tensor, state: dict[str, Tensor], grad: Tensor, hp: HyperParams,
             gossip: Gossip) -> Tensor:
        g = self._decayed(x, grad, hp)
        u = state["u"]
        u_new = (u * hp.beta).add_(g)  # not in place: the state changes only once the gossip returned
        x_new = gossip(x=x - hp.lr * u_new)["x"]
        u.copy_(u_new)
        return x_new


class QGDSGDm(Algorithm):
    """Quasi-global momentum (Lin et al. 2021): momentum built from the model's own displacement."""

    name = "qg-dsgdm"
    state_names = ("m",)
    sent = ("x",)

    def step(self, x: Tensor, state: dict[str, Tensor], grad: Tensor, hp: HyperParams,
             gossip: Gossip) -> Tensor:
        g = self._decayed(x, grad, hp)
        m_hat = state["m"]
        m = hp.beta * m_hat + g
        x_new = gossip(x=x - hp.lr * m)["x"]
        m_hat.mul_(hp.beta).add_((1 - hp.beta) / hp.lr * (x - x_new))
        return x_new


class DecentLaM(Algorithm):
    """DecentLaM (Yuan et al. 2021): momentum over the gossip-corrected gradient."""

    name = "decentlam"
    state_names = ("m",)
    sent = ("x",)

    def step(self, x: Tensor, state: dict[str, Tensor], grad: Tensor, hp: HyperParams,
             gossip: Gossip) -> Tensor:
        g = self._decayed(x, grad, hp)
        z_mixed = gossip(x=x - hp.lr * g)["x"]
        g_hat = (x - z_mixed) / hp.lr
        m = state["m"]
        m.mul_(hp.beta).add_(g_hat)
        return x - hp.lr * m


class MomentumTracking(Algorithm):
    """Momentum Tracking (Takezawa et al., TMLR 2023).

    u ← βu + g ; send x and d = c − u ; x ← mix(x) − η(u − c) ; c ← mix(d) + u.
    The descent uses the tracker from *before* this round, and mix(x) the x from before the descent,
    as in the authors' reference implementation.
    """

    name = "momentum-tracking"
    state_names = ("u", "c")
    sent = ("x", "d")
    tracks = True
    tracker = "c"
    flow = "d"
    #: Gradient Tracking is this rule with β forced to zero.
    force_beta_zero = False

    def step(self, x: Tensor, state: dict[str, Tensor], grad: Tensor, hp: HyperParams,
             gossip: Gossip) -> Tensor:
        g = self._decayed(x, grad, hp)
        u = state["u"]
        # The new momentum out of place: the state changes only once the gossip returned.
        u_new = g if self.force_beta_zero else (u * hp.beta).add_(g)
        return self._track(x, state, u_new, state["c"] - u_new, hp.lr, gossip)

    def start_step(self, x: Tensor, state: dict[str, Tensor], grad: Tensor | None, hp: HyperParams,
                   gossip: Gossip, *, descend: bool, exact: bool = False) -> Tensor:
        """One round of the average start (peernet.core.tracker_start): the momentum is the node's first one —
        ``grad`` (with weight decay) when given, else the one it holds — and stays; the tracker update runs as in
        :meth:`step`; ``x`` descends only when ``descend`` (the first descent, along ``u − c``).

        ``exact`` (node-stacked ``(N, P)`` only, the simulator): the tracker starts at ``u − ū`` over the nodes, so
        that the descent is along the network-average first momentum ``ū`` itself."""
        u_new = self._decayed(x, grad, hp) if grad is not None else state["u"]
        if exact:
            if u_new.dim() != 2:
                raise AlgorithmError("the exact average start needs every node's momentum (node-stacked tensors)")
            # d = c − u with c = u − ū is −ū on every node; written so, the first direction is ū to the last bit.
            d = (-u_new.mean(dim=0, keepdim=True)).expand_as(u_new).contiguous()
        else:
            d = state["c"] - u_new
        return self._track(x, state, u_new, d, hp.lr if descend else 0.0, gossip)

    @staticmethod
    def _track(x: Tensor, state: dict[str, Tensor], u_new: Tensor, d: Tensor, lr: float, gossip: Gossip) -> Tensor:
        """Send ``x`` and ``d = c − u_new``; x ← mix(x) − η(u − c); c ← mix(d) + u; u ← u_new."""
        mixed = gossip(x=x, d=d)
        # x ← mix(x) − η(u − c). IEEE subtraction is antisymmetric, so u − c is exactly −d and this is the
        # same number computed with one pass over memory less. (η = 0 while the average start averages: mix(x).)
        x_new = mixed["x"] + lr * d if lr else mixed["x"]
        # c ← mix(d) + u; written as in the paper so that mean(u − c) = mean(u) holds exactly.
        torch.add(mixed["d"], u_new, out=state["c"])
        if u_new is not state["u"]:
            state["u"].copy_(u_new)
        return x_new


class GradientTracking(MomentumTracking):
    """Gradient Tracking: Momentum Tracking with β = 0 (u = g)."""

    name = "gradient-tracking"
    force_beta_zero = True


ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls
    for cls in (DSGD, DSGDm, QGDSGDm, DecentLaM, GradientTracking, MomentumTracking)
}


def get_algorithm(name: str) -> Algorithm:
    """Instantiate an algorithm by its CLI name."""
    try:
        return ALGORITHMS[name]()
    except KeyError:
        raise AlgorithmError(
            f"unknown algorithm {name!r}; choose one of: {', '.join(ALGORITHMS)}"
        ) from None
