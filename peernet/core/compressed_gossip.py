"""Compressed gossip with public copies (CHOCO, Koloskova et al. 2019), written once for one node and for N stacked.

Every node i has a *public copy* ``x̂_i`` of each tensor it gossips, and each of its neighbours holds the very
same copy. A round at node i, for each gossiped tensor ``v``:

    (a) q_i = C(v_i − x̂_i)                          the message: the compressed change of the public copy
    (b) x̂_j ← x̂_j + q_j   for j = i and each neighbour  every holder of a copy adds the same message
    (c) mixed_i = v_i + γ·(mix(x̂)_i − x̂_i)          = v_i + γ Σ_j W_ij (x̂_j − x̂_i), consensus step γ

What C drops stays in ``v_i − x̂_i`` and is sent in later rounds (the error feedback). A rule receives
``mixed`` in place of ``mix(v)``, so the rules in algorithms.py run unchanged. W is symmetric and both ends of
an edge hold the same copies, so ``Σ_i mixed_i = Σ_i v_i``: the trackers of Gradient and Momentum Tracking
keep their sum whatever C does (docs/algorithms.md, "Compressed exchange").

:class:`NodeCompressedGossip` is one node's side (the daemon: ``(P,)`` tensors, mixing with ``mix_one``);
:class:`StackedCompressedGossip` all nodes at once (the simulator: ``(N, P)``, one stacked copy per tensor since
all holders of ``x̂_j`` hold the same, mixed with ``SparseMixing``). Both run the same steps in the same order,
so a simulator row equals the node's value bit for bit. Both are transactional, like the rules: a round's new
copies and compressor state are computed aside and kept only once the exchange returned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from peernet.core.algorithms import Gossip
from peernet.core.compressors import Compressed, Compressor, MessageKey, Warm
from peernet.core.mixing import mix_one
from peernet.errors import CompressionError

Tensor = torch.Tensor
Exchange = Callable[[dict[str, Compressed]], tuple[Mapping[int, Mapping[str, Compressed]], Mapping[int, float]]]
"""The daemon's part of a round: send this node's messages, wait for the neighbours'; return the messages that
arrived, by neighbour index, and the round's weights ``W_ij`` over the neighbours mixed with. May raise to
abandon the round (nothing is kept then)."""


def consensus_step(compressor: Compressor, size: int, gamma: float | None) -> float:
    """``gamma``, or ``compressor``'s default γ for tensors of ``size`` entries (docs/algorithms.md has the
    measurements behind the defaults)."""
    if gamma is None:
        return compressor.default_gamma(size)
    if not 0 < gamma <= 1:
        raise CompressionError(f"the consensus step γ must be in (0, 1], got {gamma}")
    return gamma


def mixed_value(v: Tensor, copies: Tensor, mixed_copies: Tensor, gamma: float) -> Tensor:
    """``v + γ·(mix(x̂) − x̂)``: what the rule receives in place of ``mix(v)`` (elementwise: ``(P,)`` or ``(N, P)``)."""
    return torch.sub(mixed_copies, copies).mul_(gamma).add_(v)


@dataclass
class NodeRound:
    """One round in flight at one node: its messages, and the public copies as they will be once committed."""

    round: int
    messages: dict[str, Compressed]
    own: dict[str, Tensor]
    warm: dict[str, Warm]
    copies: dict[int, dict[str, Tensor]] = field(default_factory=dict)


class NodeCompressedGossip:
    """One node's compressed gossip: its own public copies ``x̂_i``, its neighbours' ``x̂_j``, its compressor state.

    ``node`` is the node's index in the topology (the simulator's row), which seeds random-k and low rank.
    Per round: :meth:`prepare` (the messages to send), :meth:`receive` for each neighbour's messages,
    :meth:`mixed` (the values the rule gets), :meth:`commit`; :meth:`gossip` does all four around an exchange.
    Copies start at zero at every node.
    """

    def __init__(self, node: int, compressor: Compressor, gamma: float) -> None:
        self.node, self.compressor, self.gamma = node, compressor, gamma
        self.own: dict[str, Tensor] = {}
        self.copies: dict[int, dict[str, Tensor]] = {}
        self.warm: dict[str, Warm] = {}

    def _own(self, name: str, like: Tensor) -> Tensor:
        return self.own[name] if name in self.own else torch.zeros_like(like)

    def prepare(self, tensors: Mapping[str, Tensor], round_: int) -> NodeRound:
        """(a) The messages for ``tensors`` in round ``round_`` (0-based); nothing is kept yet."""
        pending = NodeRound(round_, {}, {}, {})
        for name, v in tensors.items():
            own = self._own(name, v)
            msg, pending.warm[name] = self.compressor.compress(v - own, MessageKey(self.node, round_, name),
                                                               self.warm.get(name, ()))
            pending.messages[name] = msg
            pending.own[name] = self.compressor.apply(own, msg)
        return pending

    def receive(self, pending: NodeRound, sender: int, messages: Mapping[str, Compressed]) -> None:
        """(b) Neighbour ``sender``'s messages of the round, added to this node's copies of its tensors (aside)."""
        updated: dict[str, Tensor] = {}
        for name, own in pending.own.items():
            if name not in messages:
                raise CompressionError(f"neighbour {sender} sent no {name!r} in round {pending.round}")
            self.compressor.check(messages[name], own.shape[-1])
            held = self.copies.get(sender, {}).get(name)
            updated[name] = self.compressor.apply(torch.zeros_like(own) if held is None else held, messages[name])
        pending.copies[sender] = updated

    def mixed(self, tensors: Mapping[str, Tensor], pending: NodeRound, weights: Mapping[int, float]
              ) -> dict[str, Tensor]:
        """(c) ``v_i + γ Σ_j W_ij (x̂_j − x̂_i)`` over the neighbours in ``weights``, whose messages were received."""
        missing = sorted(set(weights) - set(pending.copies))
        if missing:
            raise CompressionError(f"no messages of round {pending.round} from neighbours {missing}")
        out = {}
        for name, v in tensors.items():
            own = pending.own[name]
            mixed_copies = mix_one(own, {j: pending.copies[j][name] for j in weights}, weights)
            out[name] = mixed_value(v, own, mixed_copies, self.gamma)
        return out

    def commit(self, pending: NodeRound) -> None:
        """Keep the round's copies and compressor state: the exchange returned and the rule goes on."""
        self.own.update(pending.own)
        self.warm.update(pending.warm)
        for j, updated in pending.copies.items():
            self.copies.setdefault(j, {}).update(updated)

    def gossip(self, exchange: Exchange, round_: int) -> Gossip:
        """A rule's gossip for round ``round_``: prepare, ``exchange``, receive, mix, and commit once it returned."""
        def run(**tensors: Tensor) -> dict[str, Tensor]:
            pending = self.prepare(tensors, round_)
            received, weights = exchange(pending.messages)
            for j in sorted(received):
                self.receive(pending, j, received[j])
            mixed = self.mixed(tensors, pending, weights)
            self.commit(pending)
            return mixed
        return run

    def edge_terms(self, name: str, weights: Mapping[int, float]) -> dict[int, Tensor]:
        """``γ·W_ij (x̂_j − x̂_i)`` per neighbour, from the committed copies: what each edge added to ``mixed``
        in the last round (for a tracker, that edge's flow, which a rollback takes back)."""
        own = self.own[name]
        return {j: (self.copies[j][name] - own) * (self.gamma * w) for j, w in sorted(weights.items())}

    def forget(self, neighbour: int) -> None:
        """Drop the copies held of ``neighbour`` (its edge is gone; a restarted edge needs both ends' copies again)."""
        self.copies.pop(neighbour, None)


class StackedCompressedGossip:
    """All N nodes' compressed gossip at once, for node-stacked ``(N, P)`` tensors (the simulator).

    Row j of ``copies[name]`` is ``x̂_j``, which node j and each of its neighbours hold alike. Every step is the
    per-node one: elementwise compressors take the whole stack (the same bits as row by row), the others go
    row by row with each node's own key and state.
    """

    def __init__(self, compressor: Compressor, gamma: float) -> None:
        self.compressor, self.gamma = compressor, gamma
        self.copies: dict[str, Tensor] = {}
        self.warm: dict[tuple[int, str], Warm] = {}
        #: Bytes of tensor data all nodes sent in the last round, all tensors together (each once per node).
        self.bytes_sent = 0

    def _advance(self, name: str, v: Tensor, round_: int, warm: dict[tuple[int, str], Warm]) -> tuple[Tensor, int]:
        """Steps (a) and (b) for tensor ``name``: every node's copy after its message, and the bytes sent."""
        copies = self.copies[name] if name in self.copies else torch.zeros_like(v)
        residual = v - copies
        if self.compressor.elementwise:
            msg, _ = self.compressor.compress(residual, MessageKey(-1, round_, name), ())
            return self.compressor.apply(copies, msg), msg.nbytes
        updated, sent = torch.empty_like(copies), 0
        for i in range(v.shape[0]):
            msg, warm[(i, name)] = self.compressor.compress(residual[i], MessageKey(i, round_, name),
                                                            self.warm.get((i, name), ()))
            updated[i] = self.compressor.apply(copies[i], msg)
            sent += msg.nbytes
        return updated, sent

    def exchange(self, tensors: Mapping[str, Tensor], round_: int, mix: Callable[[Tensor], Tensor]
                 ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """One round for every node: the mixed values and the new public copies, both by tensor name.

        ``mix`` is the plain node-stacked mixing (``SparseMixing.mix``, whose rows equal ``mix_one``). The copies
        and compressor state are kept only once every tensor is done.
        """
        warm: dict[tuple[int, str], Warm] = {}
        mixed, updated, sent = {}, {}, 0
        for name, v in tensors.items():
            updated[name], nbytes = self._advance(name, v, round_, warm)
            sent += nbytes
            mixed[name] = mixed_value(v, updated[name], mix(updated[name]), self.gamma)
        self.copies.update(updated)
        self.warm.update(warm)
        self.bytes_sent = sent
        return mixed, updated

