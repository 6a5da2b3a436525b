"""One node's view of its edges under churn: live set, agreed edge epochs, declared degrees, tracker flows.

The round protocol of docs/design.md §3 and §4, written without sockets or clocks so that it can be tested
exhaustively and reasoned about on its own:

* At the start of round r a node declares its *live* neighbours (those it intends to mix with), its degree
  δ = |live| and, per edge, the edge epoch. Each neighbour's message carries the same three things.
* Edge (i, j) is *used* in round r exactly when each end listed the other as live and both declared the
  same epoch. Both ends see both declarations once both messages arrive, so they decide alike; the only
  asymmetry left is a message that one end waited for in vain (a timeout).
* A used edge gets weight w = 1/(1 + max(δ_i, δ_j)) (Metropolis–Hastings over the declared degrees; the
  topology's own weight while both ends are complete), so W stays symmetric and doubly stochastic
  whatever subset of edges is used.
* For tracking methods each end accumulates the edge's tracker flow F_ij += w (d_j − d_i) (with ClippedGossip,
  w · clip(d_j − d_i, τ): still F_ji = −F_ij, since clip is odd; with compressed gossip γ w (d̂_j − d̂_i), in the
  public copies that both ends hold alike).
* Dropping an edge (timeout, restart, catch-up) rolls its flow back out of the tracker, c_i −= F_ij,
  F_ij = 0, and bumps the epoch. A node that sees a higher epoch from its neighbour rolls back likewise and
  adopts it. Every edge whose flows differ between its ends therefore has a newer epoch on one side, and
  the other side rolls back as soon as it hears from it: the live trackers sum to zero again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from peernet.core.topology import mh_weight


@dataclass(frozen=True)
class Declaration:
    """What one end of an edge declared for it in its round message."""

    live: bool    # the sender intends to mix with the receiver this round
    epoch: int    # the sender's epoch for this edge
    degree: int   # the sender's number of live neighbours this round
    full: bool = True  # every topology neighbour of the sender is live


def edge_used(mine: Declaration, theirs: Declaration) -> bool:
    """Both ends compute this from the same pair of declarations, so they always agree."""
    return mine.live and theirs.live and mine.epoch == theirs.epoch


def edge_weight(mine: Declaration, theirs: Declaration, configured: float) -> float:
    """The topology's weight while both ends have all their neighbours; MH over declared degrees otherwise.

    Fault-free runs thus mix exactly as the simulator does (uniform or explicit weights included), and
    under churn both ends still derive the same symmetric weight from the two declarations.
    """
    if mine.full and theirs.full:
        return configured
    return mh_weight(mine.degree, theirs.degree)


class NodeEdges:
    """Edge state of one node: live flags, epochs and (for tracking methods) cumulative tracker flows."""

    def __init__(self, neighbours: Iterable[int], *, tracks: bool, rollback: bool = True) -> None:
        self.neighbours = sorted(neighbours)
        self.tracks = tracks
        #: Without rollback a dropped edge keeps its flow in the tracker (for the with/without comparison).
        self.rollback_enabled = rollback
        self.live: dict[int, bool] = {j: True for j in self.neighbours}
        self.epoch: dict[int, int] = {j: 0 for j in self.neighbours}
        self.flow: dict[int, torch.Tensor] = {}
        #: Flows rolled back during a round, taken out of the tracker by ``settle`` once the rule has updated it
        #: (the rule rewrites the tracker from values it computed before the round's messages arrived).
        self.pending: torch.Tensor | None = None
        self.rollbacks = 0

    # -- declarations ----------------------------------------------------------------------------------
    def degree(self) -> int:
        return sum(self.live.values())

    def declare(self, j: int) -> Declaration:
        """This round's declaration towards neighbour ``j`` (call once per round, before sending)."""
        degree = self.degree()
        return Declaration(live=self.live[j], epoch=self.epoch[j], degree=degree, full=degree == len(self.neighbours))

    # -- events ----------------------------------------------------------------------------------------
    def record(self, j: int, weight: float, d_own: torch.Tensor, d_theirs: torch.Tensor) -> None:
        """Add this round's tracker flow over the used edge (i, j): w (d_j − d_i)."""
        if not self.tracks:
            return
        self._add_flow(j, (d_theirs - d_own).mul_(weight))

    def record_pull(self, j: int, weight: float, pull: torch.Tensor) -> None:
        """Add this round's flow when the mix used ``pull`` instead of d_j − d_i (ClippedGossip: the clipped
        difference, peernet.core.clipping), so a rollback takes back exactly what was mixed in: w · pull."""
        if not self.tracks:
            return
        self._add_flow(j, pull * weight)

    def record_term(self, j: int, term: torch.Tensor) -> None:
        """Add this round's flow as the very term the edge added to the mix (compressed gossip:
        ``γ w (d̂_j − d̂_i)``, peernet.core.edge_copies), so a rollback takes back exactly what was mixed in."""
        if not self.tracks:
            return
        self._add_flow(j, term.clone())

    def _add_flow(self, j: int, delta: torch.Tensor) -> None:
        if j in self.flow:
            self.flow[j].add_(delta)
        else:
            self.flow[j] = delta

    def _roll_back(self, j: int) -> None:
        flow = self.flow.pop(j, None)
        if flow is None:
            return
        self.rollbacks += 1
        if self.rollback_enabled:
            self.pending = flow if self.pending is None else self.pending.add_(flow)

    def settle(self, tracker: torch.Tensor | None) -> None:
        """Take the flows rolled back this round out of the tracker (after the rule's update)."""
        if self.pending is not None and tracker is not None:
            tracker.sub_(self.pending.to(tracker.device, tracker.dtype))
        self.pending = None

    def drop(self, j: int) -> None:
        """Neighbour ``j`` missed its deadline: stop waiting for it, roll its edge back, start a new epoch."""
        self._roll_back(j)
        self.epoch[j] += 1
        self.live[j] = False

    def alive(self, j: int) -> None:
        """An authenticated message came from ``j``: wait for it again from the next round on."""
        self.live[j] = True

    def sync(self, j: int, their_epoch: int) -> None:
        """``j`` declared ``their_epoch`` in its round message: a newer epoch means it dropped the edge.

        Call in round order, after the round's own flows were recorded, so that a flow recorded in the
        round the other end dropped is rolled back with the rest.
        """
        if their_epoch > self.epoch[j]:
            self._roll_back(j)
            self.epoch[j] = their_epoch

    def peer_restarted(self, j: int) -> None:
        """``j`` said hello: it (re)started with a zero tracker, possibly from a checkpoint with older epochs.

        Our flow over the edge has no counterpart any more, so it is rolled back, and a new epoch begins that
        is newer than any the previous incarnation declared (it adopts ours when it hears it). Without this, a
        node restarted within the deadline could come back at an epoch equal to ours and be mixed with while
        our side still holds the flow exchanged with its previous incarnation.

        The epoch moves on even when we hold no flow (we had dropped the edge already): the hello may reach us
        after this round's message went out, declaring the edge live in our current epoch, and the restarted
        node, whose restart epoch can equal that one (it never saw our drop), mixes over it while we, told of
        the reset mid-round, do not. Only a newer epoch from us makes it take that one-sided flow back.
        """
        self._roll_back(j)
        self.epoch[j] += 1

    def restart(self, tracker: torch.Tensor | None) -> None:
        """Rejoin after a crash or a long stall: tracker and flows to zero, a new epoch on every edge.

        The neighbours roll their side of every edge back when they see the newer epochs, so the tracker
        sum over all nodes is zero again. (Zeroing the tracker discards exactly this node's flows.)
        """
        if tracker is not None and self.rollback_enabled:
            tracker.zero_()
        self.flow.clear()
        self.pending = None
        for j in self.neighbours:
            self.epoch[j] += 1
            self.live[j] = True

    # -- persistence ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, object]:
        return {"epoch": dict(self.epoch), "live": dict(self.live), "flow": {j: f.cpu() for j, f in self.flow.items()}}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        epoch = state.get("epoch", {})
        flow = state.get("flow", {})
        assert isinstance(epoch, dict) and isinstance(flow, dict)
        self.epoch = {j: int(epoch.get(j, 0)) for j in self.neighbours}
        self.flow = {int(j): f.clone() for j, f in flow.items() if int(j) in self.epoch}
        self.live = {j: True for j in self.neighbours}
