"""Compressed gossip under churn: the public copies an edge's two ends hold, tied to the edge's epoch.

:class:`NodeCompressedGossip` assumes that each neighbour holds this node's public copy exactly: every holder adds
every message. A daemon's neighbour that missed one message (lost, late, excluded, restarted) would hold a stale
copy for ever, and the two ends of the edge would mix, and move tracker mass, with different copies. So a copy is
held *per edge and per edge epoch* (docs/algorithms.md, "Compressed exchange under churn"):

* The first message a node sends over an edge in an epoch is *full*: its public copy after this round's change,
  uncompressed. The receiver takes it as its copy of the sender: both ends then hold the same bits.
* Every later message of that epoch is the compressed change, which the receiver adds to its copy, provided it
  has the copy of that epoch and has added every message of the epoch up to the previous round (the *chain*).
* An edge is used in a round only when the receiver's chain is whole. When the declarations say the edge is used
  and the chain is broken (a message lost, a full one missed), the receiver drops the edge as it drops a neighbour
  that missed the deadline: a new epoch, which both ends start again with a full message. The flows of the
  tracker are rolled back at both ends as for every dropped edge, so the trackers still sum to zero.

The sender's own copy is one for all its edges: a full message carries that copy after the round's change, so
the edge rejoins the node's one lineage at once, and in the fault-free case every message after the first is the
simulator's message and every copy the simulator's copy, bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from peernet.core.compressed_gossip import NodeCompressedGossip, NodeRound
from peernet.core.compressors import Compressed

Tensor = torch.Tensor


@dataclass(frozen=True)
class Incoming:
    """A neighbour's round message as the edge sees it: its declared epoch and either the compressed messages or
    the full public copies (by gossiped tensor name)."""

    epoch: int
    compressed: Mapping[str, Compressed] | None = None
    full: Mapping[str, Tensor] | None = None


@dataclass
class EdgeRound:
    """A round in flight: the node's own step (:class:`NodeRound`) and the chains as they will be once committed."""

    step: NodeRound
    chains: dict[int, tuple[int, int]] = field(default_factory=dict)
    broken: set[int] = field(default_factory=set)

    @property
    def valid(self) -> set[int]:
        """The neighbours whose copies this round holds whole (their chains unbroken)."""
        return set(self.step.copies)


class EdgeCopies:
    """One node's public copies under churn: its own (one lineage), and per neighbour the copy and its chain."""

    def __init__(self, gossip: NodeCompressedGossip) -> None:
        self.gossip = gossip
        #: Per neighbour: (edge epoch, next round) of the copy held of it: the epoch its full message started and
        #: the round whose message comes next in that epoch.
        self.chains: dict[int, tuple[int, int]] = {}
        #: Per neighbour: the epoch in which our full copy went to it (the first message of that epoch).
        self.full_sent: dict[int, int] = {}
        #: Full messages sent and received, and chains found broken (counters for the summary).
        self.resyncs_sent = 0
        self.resyncs_received = 0
        self.broken_chains = 0

    def prepare(self, tensors: Mapping[str, Tensor], round_: int) -> EdgeRound:
        """The round's messages and own copies (:meth:`NodeCompressedGossip.prepare`); nothing is kept yet."""
        return EdgeRound(self.gossip.prepare(tensors, round_))

    def sends_full(self, neighbour: int, epoch: int) -> bool:
        """Whether this round's message to ``neighbour``, declaring ``epoch``, is the full copy (and note it sent).

        Noted at once, not at commit: the message is on its way even if the round is then abandoned, and a round
        is abandoned only by stopping or by a catch-up, which starts every edge over in a new epoch anyway.
        """
        if self.full_sent.get(neighbour) == epoch:
            return False
        self.full_sent[neighbour] = epoch
        self.resyncs_sent += 1
        return True

    def receive(self, pending: EdgeRound, round_: int, incoming: Mapping[int, Incoming]) -> None:
        """Advance the copy of each neighbour whose message of ``round_`` arrived (aside, until :meth:`commit`).

        A full message starts the chain of its epoch; a compressed one continues a whole chain of its epoch, else
        the chain is broken and the copy is forgotten at commit (until the next full message)."""
        for j in sorted(incoming):
            msg = incoming[j]
            if msg.full is not None:
                pending.step.copies[j] = {name: msg.full[name].clone() for name in pending.step.own}
                pending.chains[j] = (msg.epoch, round_ + 1)
                self.resyncs_received += 1
            elif msg.compressed is not None and self.chains.get(j) == (msg.epoch, round_):
                self.gossip.receive(pending.step, j, msg.compressed)
                pending.chains[j] = (msg.epoch, round_ + 1)
            else:
                pending.broken.add(j)

    def mixed(self, tensors: Mapping[str, Tensor], pending: EdgeRound, weights: Mapping[int, float]
              ) -> dict[str, Tensor]:
        """``v_i + γ Σ_j W_ij (x̂_j − x̂_i)`` over the neighbours in ``weights`` (whose chains must be whole)."""
        return self.gossip.mixed(tensors, pending.step, weights)

    def commit(self, pending: EdgeRound) -> None:
        """Keep the round's copies, chains and compressor state; forget the copies whose chains broke."""
        self.gossip.commit(pending.step)
        self.chains.update(pending.chains)
        for j in pending.broken:
            self.forget(j)
            self.broken_chains += 1

    def forget(self, neighbour: int) -> None:
        """Drop the copy held of ``neighbour`` (broken chain, or it restarted): only a full message brings it back."""
        self.chains.pop(neighbour, None)
        self.gossip.forget(neighbour)

    def edge_terms(self, name: str, weights: Mapping[int, float]) -> dict[int, Tensor]:
        """What each used edge added to ``name``'s mix in the committed round: ``γ W_ij (x̂_j − x̂_i)``."""
        return self.gossip.edge_terms(name, weights)
