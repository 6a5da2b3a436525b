"""The daemon's gossip: send this round's tensors to every neighbour, collect theirs, mix.

No global barrier: a node advances as soon as it holds its neighbours' messages for its round.
Messages for the next round are buffered, older ones and duplicates are ignored, and anything that
fails validation is dropped and counted by reason while the node keeps running. A (re)started neighbour
announces itself with ``hello``; we then resend the message of the round it asks for, because the copy
we sent to its previous incarnation was lost with it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping

import torch

from peernet.core.mixing import mix_one
from peernet.errors import CodecError
from peernet.transport import Transport
from peernet.wire.codec import check_finite, decode, decode_header, encode, specs_of
from peernet.wire.messages import DTYPES, PROTOCOL_VERSION, Expectation, Header, TensorSpec

log = logging.getLogger("peernet.node")

#: Messages kept per neighbour while it cannot take them (this round's, a resend, a hello, a bye).
OUTBOX_LIMIT = 4

#: How many rounds ahead of our own we accept and buffer (a neighbour is never further ahead than one).
ROUNDS_AHEAD = 1


class RoundAbandoned(Exception):
    """Raised from inside gossip when the node is asked to stop while waiting for neighbours."""


class Exchange:
    """Per-round message exchange with the node's neighbours over a transport."""

    def __init__(self, transport: Transport, node_id: int, run: str, neighbours: Mapping[int, float],
                 layout: Mapping[str, TensorSpec], *, max_abs: float | None = None,
                 round_timeout: float = 30.0, should_stop: Callable[[], bool] = lambda: False) -> None:
        self.transport = transport
        self.node_id = node_id
        self.run = run
        self.weights = dict(neighbours)
        self.layout = dict(layout)
        self.max_abs = max_abs
        self.round_timeout = round_timeout
        self.should_stop = should_stop
        payload = sum(spec.nbytes for spec in layout.values())
        # Header is small; leave generous room for it but reject anything bigger than one round's tensors.
        self.max_bytes = payload + 64 * 1024
        self.inbox: dict[int, dict[int, dict[str, torch.Tensor]]] = {}   # round -> sender -> tensors
        self.sent: dict[int, list[bytes | memoryview]] = {}             # round -> frames (for resends)
        self.dropped: Counter[str] = Counter()   # invalid messages, by reason
        self.ignored: Counter[str] = Counter()   # valid but unneeded: duplicates, resends of finished rounds
        self.faulty: Counter[int] = Counter()    # per neighbour: rounds whose tensors were not finite or too large
        self.neighbour_x: dict[int, torch.Tensor] = {}                  # last x received per neighbour
        self.endpoint_updates: dict[int, str] = {}
        self.wait_seconds = 0.0
        self.mix_seconds = 0.0
        self._buffers: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        self.byes: set[int] = set()
        # Messages a neighbour could not take yet (connection still being set up after a (re)connect with
        # IMMEDIATE=1, or its queue full): retried on every poll, oldest first, a few per neighbour at most.
        self.outbox: dict[int, deque[list[bytes | memoryview]]] = {j: deque(maxlen=OUTBOX_LIMIT) for j in neighbours}

    # -- receiving -------------------------------------------------------------------------------------
    def _buffer(self, sender: int, round_: int) -> dict[str, torch.Tensor]:
        key = (sender, round_ % 2)
        buf = self._buffers.get(key)
        if buf is None:
            buf = {name: torch.empty(spec.shape, dtype=DTYPES[spec.dtype]) for name, spec in self.layout.items()}
            self._buffers[key] = buf
        return buf

    def _expect(self, current_round: int) -> Expectation:
        return Expectation(run=self.run, senders=frozenset(self.weights), layout=self.layout,
                           max_bytes=self.max_bytes, max_round_ahead=ROUNDS_AHEAD, current_round=current_round)

    def _drop(self, code: str, detail: str, sender: int | None) -> None:
        self.dropped[code] += 1
        log.warning("dropped message from %s: %s (%s; %d dropped so far)", sender, detail, code,
                    sum(self.dropped.values()))

    def poll(self, current_round: int, timeout: float) -> None:
        """Receive at most one message (waiting up to ``timeout``) and file or drop it."""
        if self._flush():
            timeout = min(timeout, 0.01)  # something is still queued: come back soon to retry it
        got = self.transport.recv(timeout)
        if got is None:
            return
        routing_id, frames = got
        expect = self._expect(current_round)
        size = sum(len(f) for f in frames)
        if size > self.max_bytes:
            # Larger than any valid message of this run; libzmq's MAXMSGSIZE cuts off far larger ones.
            self._drop("size", f"{size} bytes, at most {self.max_bytes} expected", routing_id)
            return
        try:
            if not frames:
                raise CodecError("empty message")
            header = decode_header(frames[0], expect)
            msg = None
            if header.kind == "round":
                # Every payload is validated, even one we will not use, so a malformed message is always
                # dropped and counted as such. Two buffers per neighbour (this round and the next) are reused:
                # no allocation per message. Anything that cannot be filed (another identity, a stale round,
                # a duplicate) goes to a scratch buffer, so it can never overwrite a neighbour's tensors.
                usable = (routing_id == header.sender and header.round >= current_round
                          and header.sender not in self.inbox.get(header.round, {}))
                msg = decode(frames, expect, out=self._buffer(routing_id if usable else -1, header.round))
                try:
                    check_finite(msg.tensors, self.max_abs)
                except CodecError:
                    if routing_id == header.sender:
                        self.faulty[routing_id] += 1  # a neighbour sending NaN/Inf/absurd values is faulty
                    raise
            elif header.kind not in ("hello", "bye"):
                raise CodecError(f"unexpected message kind {header.kind!r}")
        except CodecError as exc:
            self._drop(getattr(exc, "code", "kind"), str(exc), routing_id)
            return
        if routing_id != header.sender:
            # The transport's identity must agree with the header: nobody may speak for another node.
            self._drop("identity", f"header says sender {header.sender}", routing_id)
            return
        if header.kind == "bye":
            self.byes.add(header.sender)
        elif msg is None:
            self._on_hello(header)
        elif header.round < current_round:
            self.ignored["stale"] += 1  # a resend of a round we already finished
        elif header.sender in self.inbox.get(header.round, {}):
            self.ignored["duplicate"] += 1
        else:
            log.debug("round %d message from %d (we are at round %d)", header.round, header.sender, current_round)
            self.inbox.setdefault(header.round, {})[header.sender] = msg.tensors

    def _on_hello(self, header: Header) -> None:
        endpoint = header.meta.get("endpoint")
        if isinstance(endpoint, str):
            self.endpoint_updates[header.sender] = endpoint
            self.transport.connect(header.sender, endpoint)
        # Our messages of its round and the next were sent to its previous incarnation and are lost with
        # it (we may already be one round ahead of where it resumes): send both again, oldest first.
        resend = sorted(r for r in self.sent if r >= header.round)
        log.info("neighbour %d says hello at round %d; resending our rounds %s", header.sender, header.round, resend)
        for r in resend:
            self._send_to(header.sender, self.sent[r])

    # -- sending ---------------------------------------------------------------------------------------
    def hello(self, round_: int, endpoint: str) -> None:
        """Tell every neighbour we (re)started and which round we are at."""
        header = Header(version=PROTOCOL_VERSION, run=self.run, sender=self.node_id, round=round_, kind="hello",
                        degree=len(self.weights), epoch=0, meta={"endpoint": endpoint})
        frames = encode(header, {})
        for j in self.weights:
            self._send_to(j, frames)

    def _send_to(self, peer: int, frames: list[bytes | memoryview]) -> None:
        """Send now, or queue behind earlier messages the neighbour has not taken yet (keeps the order)."""
        queue = self.outbox[peer]
        if queue or not self.transport.send(peer, frames):
            queue.append(frames)

    def _flush(self) -> bool:
        """Retry queued messages; return True while something is still queued."""
        pending = False
        for peer, queue in self.outbox.items():
            while queue and self.transport.send(peer, queue[0]):
                queue.popleft()
            pending = pending or bool(queue)
        return pending

    def goodbye(self, round_: int, grace: float) -> None:
        """Say bye, then keep serving until every neighbour said bye too (or ``grace`` seconds pass).

        Our last round's message may still sit in a send queue, and a neighbour that restarts now may
        ask for it again; closing at once (linger 0) would strand such a neighbour.
        """
        header = Header(version=PROTOCOL_VERSION, run=self.run, sender=self.node_id, round=round_, kind="bye",
                        degree=len(self.weights), epoch=0)
        frames = encode(header, {})
        for j in self.weights:
            self._send_to(j, frames)
        deadline = time.perf_counter() + grace
        while self.byes < set(self.weights) and time.perf_counter() < deadline and not self.should_stop():
            self.poll(round_, timeout=0.1)
        missing = sorted(set(self.weights) - self.byes)
        if missing:
            log.warning("leaving without bye from neighbours %s", missing)

    def _send_round(self, round_: int, tensors: Mapping[str, torch.Tensor]) -> None:
        header = Header(version=PROTOCOL_VERSION, run=self.run, sender=self.node_id, round=round_, kind="round",
                        degree=len(self.weights), epoch=0, tensors=specs_of(tensors))
        frames = encode(header, tensors)
        # Keep this and the previous round's frames for neighbours that restart and ask again.
        self.sent[round_] = frames
        self.sent.pop(round_ - 2, None)
        for j in sorted(self.weights):
            self._send_to(j, frames)

    # -- one round -------------------------------------------------------------------------------------
    def gossip_for(self, round_: int) -> Callable[..., dict[str, torch.Tensor]]:
        """The gossip callable the algorithm rule uses for ``round_``."""

        def gossip(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
            # A private copy: the frames share memory with these tensors and are kept for resends, so
            # nothing the rule does to its own tensors afterwards may change what a neighbour receives.
            cpu = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
            self._send_round(round_, cpu)
            received = self._collect(round_)
            t0 = time.perf_counter()
            mixed = {k: mix_one(cpu[k].clone(), {j: received[j][k] for j in received}, self.weights)
                     for k in cpu}
            self.mix_seconds += time.perf_counter() - t0
            if "x" in cpu:
                self.neighbour_x = {j: received[j]["x"] for j in received}
            device = next(iter(tensors.values())).device
            return {k: v.to(device) for k, v in mixed.items()}

        return gossip

    def _collect(self, round_: int) -> dict[int, dict[str, torch.Tensor]]:
        t0 = time.perf_counter()
        warned_at = t0
        while True:
            have = self.inbox.get(round_, {})
            if len(have) == len(self.weights):
                break
            if self.should_stop():
                raise RoundAbandoned(round_)
            self.poll(round_, timeout=0.2)
            now = time.perf_counter()
            if now - warned_at > self.round_timeout:
                missing = sorted(set(self.weights) - set(self.inbox.get(round_, {})))
                log.warning("round %d: still waiting for neighbours %s after %.0fs", round_, missing, now - t0)
                warned_at = now
        self.wait_seconds += time.perf_counter() - t0
        for old in [r for r in self.inbox if r <= round_]:
            del self.inbox[old]
        return have
