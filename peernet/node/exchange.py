"""The daemon's gossip: send this round's tensors to every neighbour, collect theirs until a deadline, mix.

No global barrier: a node advances as soon as it holds its live neighbours' messages for its round, or when
the adaptive deadline passes (the missing neighbours are then excluded: peernet.core.edges). Messages for
the next round are buffered, older ones and duplicates are ignored, and anything that fails validation is
dropped and counted by reason while the node keeps running. A (re)started neighbour announces itself with
``hello``; we answer with our current round and resend the rounds we still hold, because what we sent to
its previous incarnation was lost with it. A node never sends what its neighbours would reject: its own tensors
pass the same check first, or it stops (docs/security.md, "Blame").
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import replace

import torch

from peernet.core.clipping import clipped_mix_one, pulls
from peernet.core.edge_copies import EdgeCopies, Incoming
from peernet.core.edges import Declaration, NodeEdges, edge_used, edge_weight
from peernet.core.mixing import mix_one
from peernet.core.rounds import AdaptiveDeadline, RoundPolicy
from peernet.core.topology_limits import endpoint_problem
from peernet.errors import CatchUp, CodecError, RoundAbandoned, StateOutOfBounds
from peernet.ratelimit import RateLimitedLog
from peernet.transport import Transport
from peernet.wire.codec import (
    check_finite,
    decode,
    decode_header,
    encode,
    encode_header,
    payload_views,
    specs_of,
    tensor_frames,
)
from peernet.wire.compressed import check_wire, compressed_layout, is_compressed, to_wire, unpack
from peernet.wire.messages import DTYPES, PROTOCOL_VERSION, Expectation, Header, Message, TensorSpec

log = logging.getLogger("peernet.node")

Frames = list[bytes | memoryview]

#: Messages kept per neighbour while it cannot take them (this round's, a resend, a hello, a bye).
OUTBOX_LIMIT = 4
#: The largest edge epoch an honest peer sends: epochs grow by one per drop or restart of the edge, so no real
#: run comes near; far below the wire's int64 limit, so the +1 of a restart can never overflow it.
MAX_EPOCH = 1 << 40
#: The in-process transport's endpoints (tests, the protocol simulator); real ones follow endpoint_problem.
_MEMORY_ENDPOINT = re.compile(r"mem://\d{1,9}")


class Exchange:
    """Per-round message exchange with the node's neighbours over a transport."""

    def __init__(self, transport: Transport, node_id: int, run: str, neighbours: Mapping[int, float],
                 layout: Mapping[str, TensorSpec], *, edges: NodeEdges | None = None,
                 policy: RoundPolicy | None = None, tracked: str | None = None, max_abs: float | None = None,
                 should_stop: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.monotonic,
                 last_round: int | None = None, degrees: Mapping[int, int] | None = None,
                 trusted_endpoints: Mapping[int, str] | None = None, clip: Mapping[str, float] | None = None,
                 copies: EdgeCopies | None = None) -> None:
        self.transport = transport
        self.node_id = node_id
        self.run = run
        self.weights = dict(neighbours)  # the topology's weights, used while every edge is up
        self.layout = dict(layout)
        # Defaults for callers that only exchange (tests, tools): every edge live, the default deadline policy.
        self.edges = edges if edges is not None else NodeEdges(neighbours, tracks=False)
        self.policy = policy if policy is not None else RoundPolicy()
        self.deadline = AdaptiveDeadline(self.policy)
        self.clock = clock  # monotonic seconds; injected so a test or the protocol simulator can own time
        # Bounds on what an honest neighbour can send (None: unchecked): the run's last round and each
        # neighbour's degree in the topology (its declared live degree never exceeds it).
        self.last_round = last_round
        self.degrees = dict(degrees or {})
        # Where each neighbour lives according to the trusted sources (the bootstrap's table, kept current by the
        # daemon): a hello's endpoint is followed only when it agrees. None: follow hellos (tests, tools).
        self.trusted_endpoints = trusted_endpoints
        self.tracked = tracked
        self.max_abs = max_abs
        # ClippedGossip radius per tensor name (peernet.core.clipping); a tensor not named is mixed plainly.
        self.clip = dict(clip or {})
        self.should_stop = should_stop
        # Compressed gossip (peernet.core.edge_copies): a round message is then the compressed layout, or the
        # full public copies (``layout``'s names, dtypes and shapes) when an edge starts a new epoch.
        self.copies = copies
        self.compressed = {} if copies is None else compressed_layout(copies.gossip.compressor, self.layout)
        payload = max(sum(spec.nbytes for spec in lay.values()) for lay in (self.layout, self.compressed))
        # Header is small; leave generous room for it but reject anything bigger than one round's tensors.
        self.max_bytes = payload + 64 * 1024
        self.inbox: dict[int, dict[int, tuple[dict[str, torch.Tensor], Declaration]]] = {}  # round -> sender
        self.sent: dict[int, dict[int, Frames]] = {}       # round -> peer -> frames (for resends)
        self.declared: dict[int, dict[int, Declaration]] = {}  # round -> peer -> what we declared
        self.dropped: Counter[str] = Counter()   # invalid messages, by reason
        self.ignored: Counter[str] = Counter()   # valid but unneeded: duplicates, resends of finished rounds
        # Per neighbour: messages whose tensors were not finite or too large, or that could not be acted on.
        self.faulty: Counter[int] = Counter()
        self.timeouts: Counter[int] = Counter()  # per neighbour: rounds it was excluded from for missing the deadline
        # Rounds in which our own tensors were over the bound (we stop at the first, so 0 or 1): never sent.
        self.self_over_bound = 0
        # Per neighbour: the most by which its values' magnitude ever exceeded ours (same round, same tensor).
        # Who pushed us over the bound came in over the edge with the largest lead: the source or a relay of it.
        self.lead: dict[int, float] = {}
        self.peaks: dict[int, dict[int, dict[str, float]]] = {}  # round -> sender -> largest |v| per tensor
        self.neighbour_x: dict[int, torch.Tensor] = {}                  # last x received per neighbour
        self.seen_round: dict[int, int] = {}     # highest round announced by each neighbour (authenticated)
        self.replies: dict[int, int] = {}        # hello replies: neighbour -> its current round
        self.latest: dict[int, tuple[int, dict[str, torch.Tensor]]] = {}  # while joining: newest round message
        self.joining = False
        self.current_round = 0
        self._start_timers()
        self.last_round_used: dict[int, bool] = {}
        self.last_heard: dict[int, float] = {}   # monotonic time of the last authenticated message per neighbour
        # Rounds whose message from a neighbour we dropped as too far ahead: waiting for them would be in vain.
        self.skipped: dict[int, set[int]] = {j: set() for j in neighbours}
        self.missed: Counter[int] = Counter()    # per neighbour: rounds excluded because its message was skipped
        # Per neighbour: rounds whose edge we dropped because our copy of its public copy had a gap (compression).
        self.broken: Counter[int] = Counter()
        self._last_ping = 0.0
        self._last_look: float | None = None  # monotonic time we last read the socket (None: not yet)
        self._buffers: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        self._poll_round = 0  # the round poll() was called for: what _place validates a header against
        self.byes: set[int] = set()
        #: Neighbours that said hello with a reset tracker after this round's declarations went out: the edge's
        #: flow was rolled back and its epoch moved on, so this round must not mix over it (it would record a
        #: flow in the old epoch that the other end later rolls back alone).
        self.reset_this_round: set[int] = set()
        self._warn = RateLimitedLog(log, every=10.0)
        # Messages a neighbour could not take yet (connection still being set up after a (re)connect with
        # IMMEDIATE=1, or its queue full): retried on every poll, oldest first, a few per neighbour at most.
        self.outbox: dict[int, deque[Frames]] = {j: deque(maxlen=OUTBOX_LIMIT) for j in neighbours}

    def _start_timers(self) -> None:
        """Seconds spent waiting for the neighbours and mixing, over the run (and the longest single wait)."""
        self.wait_seconds = 0.0
        self.mix_seconds = 0.0
        # The same two phases in this thread's CPU seconds (real CPU time even under a virtual clock): what the
        # daemon's round bookkeeping costs is measured in CPU too, since on a busy machine wall time also
        # counts the time other processes held the cores.
        self.wait_cpu = 0.0
        self.mix_cpu = 0.0
        self.max_wait = 0.0

    # -- receiving -------------------------------------------------------------------------------------
    def _buffer(self, sender: int, round_: int) -> dict[str, torch.Tensor]:
        key = (sender, round_ % (self.policy.rounds_ahead + 1))
        buf = self._buffers.get(key)
        if buf is None:
            # Both layouts' tensors under their distinct names: a message fills those of its own layout.
            buf = {name: torch.empty(spec.shape, dtype=DTYPES[spec.dtype])
                   for name, spec in {**self.layout, **self.compressed}.items()}
            self._buffers[key] = buf
        return buf

    def _expect(self, current_round: int, ahead: int | None) -> Expectation:
        return Expectation(run=self.run, senders=frozenset(self.weights), layout=self.layout,
                           max_bytes=self.max_bytes, max_round_ahead=ahead, current_round=current_round,
                           alternatives=(self.compressed,) if self.compressed else ())

    def _drop(self, code: str, detail: str, sender: int | None) -> None:
        self.dropped[code] += 1
        total = sum(self.dropped.values())
        log.debug("dropped message from %s: %s (%s; %d dropped so far)", sender, detail, code, total)
        # At most one warning per reason every 10 s: a hostile peer must not be able to fill the disk with logs.
        self._warn.warning(f"drop:{code}", "%d invalid messages dropped so far; latest from %s: %s (%s)", total,
                           sender, detail, code)

    def _note_round_hint(self, routing_id: int, frame: bytes | memoryview, current_round: int) -> None:
        """A round message too far ahead is dropped, but its round tells us the neighbours went on."""
        try:
            header = decode_header(frame, self._expect(current_round, ahead=None))
        except CodecError:
            return
        if header.sender == routing_id and header.kind == "round" and self._implausible(header) is None:
            self._heard(header.sender, header.round)
            skipped = self.skipped[header.sender]
            skipped.add(header.round)
            for old in [r for r in skipped if r < current_round]:
                skipped.discard(old)

    def _heard(self, sender: int, round_: int | None = None) -> None:
        self.edges.alive(sender)
        self.last_heard[sender] = self.clock()
        if round_ is not None and round_ > self.seen_round.get(sender, -1):
            self.seen_round[sender] = round_

    def poll(self, current_round: int, timeout: float) -> bool:
        """Receive at most one message (waiting up to ``timeout``) and file or drop it; False if none came."""
        if self._flush():
            timeout = min(timeout, 0.01)  # something is still queued: come back soon to retry it
        self._poll_round = current_round
        got = self.transport.recv(timeout, self._place)
        if got is not None:
            self._file(got, current_round)
        self._last_look = self.clock()
        self._warn.flush()  # a burst of drops that stopped is still reported once its interval passed
        return got is not None

    def flush_warnings(self) -> None:
        """Report the rate-limited warnings held back so far, whatever their interval (at exit)."""
        self._warn.flush(force=True)

    def _file(self, got: tuple[int, list[memoryview]], current_round: int) -> None:
        """Validate one message and act on it: file a round's tensors, note a hello, bye or ping, or drop it."""
        routing_id, frames = got
        size = sum(len(f) for f in frames)
        if size > self.max_bytes:
            # Larger than any valid message of this run; libzmq's MAXMSGSIZE cuts off far larger ones.
            self._drop("size", f"{size} bytes, at most {self.max_bytes} expected", routing_id)
            return
        try:
            header, msg, peaks = self._decode(routing_id, frames, current_round)
        except CodecError as exc:
            code = getattr(exc, "code", "kind")
            if code == "round" and frames:
                self._note_round_hint(routing_id, frames[0], current_round)
            self._drop(code, str(exc), routing_id)
            return
        if routing_id != header.sender:
            # The transport's identity must agree with the header: nobody may speak for another node.
            self._drop("identity", f"header says sender {header.sender}", routing_id)
            return
        problem = self._implausible(header)
        if problem is not None:
            self._drop("value", problem, routing_id)
            return
        try:
            self._act(header, msg, peaks, current_round)
        except Exception as exc:  # nothing one message asks for may end the node: drop it, count it, blame it
            self.faulty[header.sender] += 1
            self._drop("handling", f"{header.kind} message could not be acted on: {exc!r}", routing_id)

    def _act(self, header: Header, msg: Message | None, peaks: dict[str, float], current_round: int) -> None:
        if header.kind == "bye":
            self.byes.add(header.sender)
        elif header.kind == "ping":
            self._heard(header.sender)
        elif msg is None:
            self._on_hello(header)
        else:
            self._on_round(header, msg.tensors, peaks, current_round)

    def _implausible(self, header: Header) -> str | None:
        """Why a well-formed header carries values no honest peer of this run sends, or None if it does not."""
        if self.last_round is not None and header.round > self.last_round + self.policy.rounds_ahead:
            return f"round {header.round} is past the run's last round {self.last_round}"
        if header.epoch > MAX_EPOCH:
            return f"edge epoch {header.epoch} is beyond {MAX_EPOCH}"
        limit = self.degrees.get(header.sender)
        if limit is not None and header.degree > limit:
            return f"declared degree {header.degree} is above the sender's degree {limit} in the topology"
        endpoint = header.meta.get("endpoint")
        if endpoint is not None and not _valid_endpoint(endpoint):
            return f"hello endpoint {str(endpoint)[:80]!r} is not tcp://HOST:PORT or ipc://PATH"
        return None

    def _destination(self, routing_id: int, header: Header, current_round: int) -> dict[str, torch.Tensor] | None:
        """Where a round message's tensors go: the buffer of its sender and round when it can be filed, else the
        scratch buffer; None (fresh tensors) while joining, since those are kept (``latest``)."""
        if self.joining:
            return None
        # One buffer per neighbour and round it may send ahead of us (rounds_ahead + 1) is reused: no allocation
        # per message. The rounds that can be filed at once are current_round .. current_round + rounds_ahead,
        # so they never share a buffer, and an older round's buffer is reused only after that round was mixed.
        # Anything that cannot be filed (another identity, a stale round, a duplicate) goes to a scratch buffer,
        # so it can never overwrite a neighbour's tensors.
        usable = (routing_id == header.sender and self.policy.accepts(current_round, header.round)
                  and header.sender not in self.inbox.get(header.round, {}))
        return self._buffer(routing_id if usable else -1, header.round)

    def _place(self, routing_id: int, frame: memoryview) -> list[memoryview] | None:
        """The transport's ``place``: receive a valid round message's payload straight into its buffer.

        Only a header that passes every check gets buffer views; anything else is received as ordinary frames
        and dropped by ``_decode`` as before. A payload that then does not match its header (frame count or
        lengths) is rejected by ``decode``; what it wrote went into a buffer that holds no filed message.
        """
        try:
            header = decode_header(frame, self._expect(self._poll_round, ahead=self._ahead()))
        except CodecError:
            return None
        if header.kind != "round" or routing_id != header.sender or self._implausible(header) is not None:
            return None
        out = self._destination(routing_id, header, self._poll_round)
        return None if out is None else payload_views(header.tensors, out)

    def _ahead(self) -> int | None:
        return None if self.joining else self.policy.rounds_ahead

    def _decode(self, routing_id: int, frames: list[memoryview], current_round: int
                ) -> tuple[Header, Message | None, dict[str, float]]:
        """The header, and for a round message its validated tensors and their largest magnitudes; CodecError
        for anything malformed."""
        if not frames:
            raise CodecError("empty message")
        expect = self._expect(current_round, ahead=self._ahead())
        header = decode_header(frames[0], expect)
        if header.kind in ("hello", "bye", "ping"):
            return header, None, {}
        if header.kind != "round":
            raise CodecError(f"unexpected message kind {header.kind!r}")
        # Every payload is validated, even one we will not use, so a malformed message is always dropped and
        # counted as such. The destination is the one _place chose (same state, same thread), so a payload
        # received in place is not copied again.
        msg = decode(frames, expect, out=self._destination(routing_id, header, current_round))
        try:
            peaks = self._check_payload(msg.tensors)
        except CodecError:
            # A neighbour sending NaN/Inf/absurd values is faulty: no honest node sends them, since one that finds
            # its own tensors so stops instead (gossip, _check_own). So this blame never falls on a node that only
            # relays what another pushed into it.
            if routing_id == header.sender:
                self.faulty[routing_id] += 1
            raise
        return header, msg, peaks

    def _check_payload(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Largest magnitudes of a round message's tensors; CodecError for non-finite values, values over the
        bound, or a compressed message that breaks its compressor's rules (``compressed``).

        A compressed message carries changes of a public copy, not values, so the bound on values (``max_abs``)
        applies to full messages only; its positions are checked here, before anything is filed."""
        if not is_compressed(tensors):
            return check_finite(tensors, self.max_abs)
        assert self.copies is not None  # the layout has compressed names only when the run compresses
        peaks = check_finite({k: t for k, t in tensors.items() if t.is_floating_point()})
        check_wire(self.copies.gossip.compressor, tensors, self._sizes())
        return peaks

    def _sizes(self) -> dict[str, int]:
        return {name: spec.shape[0] for name, spec in self.layout.items()}

    def _on_round(self, header: Header, tensors: dict[str, torch.Tensor], peaks: dict[str, float],
                  current_round: int) -> None:
        self._heard(header.sender, header.round)
        if self.joining and "x" in tensors:
            # Rejoining: the newest state of each neighbour (for rejoin = "average"); the message is also filed
            # below (decoded into fresh tensors, so it is safe to keep), since it may be the one we need next.
            # With compression only a full message carries x (its public copy).
            newest = self.latest.get(header.sender)
            if newest is None or header.round > newest[0]:
                self.latest[header.sender] = (header.round, tensors)
        if header.round < current_round:
            self.ignored["stale"] += 1  # a resend of a round we already finished, or one we skipped
        elif header.sender in self.inbox.get(header.round, {}):
            self.ignored["duplicate"] += 1
        else:
            live = header.meta.get("live")
            decl = Declaration(live=live is True, epoch=header.epoch, degree=header.degree,
                               full=header.meta.get("full") is True)
            self.inbox.setdefault(header.round, {})[header.sender] = (tensors, decl)
            self.peaks.setdefault(header.round, {})[header.sender] = peaks

    def _on_hello(self, header: Header) -> None:
        reply = header.meta.get("reply") is True
        self._heard(header.sender, header.round if reply else None)  # a reply's round is where the sender is
        if reply:
            self.replies[header.sender] = header.round
            return
        endpoint = header.meta.get("endpoint")
        if isinstance(endpoint, str):
            self._follow(header.sender, endpoint)
        if header.meta.get("reset") is True:
            # It zeroed its tracker (crash or catch-up): our side of the edge goes too, and whatever its previous
            # incarnation sent that still waits here must not be mixed with the new one's state.
            self.edges.peer_restarted(header.sender)
            self.reset_this_round.add(header.sender)
            if self.copies is not None:  # the copy of its previous incarnation: its new one starts with a full one
                self.copies.forget(header.sender)
            for held_round in self.inbox.values():
                held_round.pop(header.sender, None)
            for held_peaks in self.peaks.values():
                held_peaks.pop(header.sender, None)
        # Tell it where we are, then send again what we sent its previous incarnation (lost with it): the
        # rounds we still hold from its round on, oldest first, or our newest one if it is further behind.
        self._send_to(header.sender, self._control("hello", self.current_round, reply=True))
        held = sorted(self.sent)
        resend = [r for r in held if r >= header.round] or held[-1:]
        log.info("neighbour %d says hello at round %d; we are at %d, resending rounds %s", header.sender,
                 header.round, self.current_round, resend)
        for r in resend:
            frames = self.sent[r].get(header.sender)
            if frames is not None:
                self._send_to(header.sender, frames)

    def _follow(self, sender: int, endpoint: str) -> None:
        """Connect to a hello's endpoint only if the trusted table agrees: an announced address is a hint, and a
        member must not be able to point us elsewhere (a changed address arrives with the bootstrap's table)."""
        trusted = None if self.trusted_endpoints is None else self.trusted_endpoints.get(sender)
        if self.trusted_endpoints is not None and trusted != endpoint:
            self.ignored["endpoint_hint"] += 1
            self._warn.warning("hint", "neighbour %d announced endpoint %s, which is not the bootstrap's %s: not "
                               "followed", sender, endpoint[:80], trusted)
            return
        self.transport.connect(sender, endpoint)

    # -- sending ---------------------------------------------------------------------------------------
    def _control(self, kind: str, round_: int, **meta: str | bool) -> Frames:
        header = Header(version=PROTOCOL_VERSION, run=self.run, sender=self.node_id, round=round_, kind=kind,
                        degree=self.edges.degree(), epoch=0, meta=dict(meta))
        return encode(header, {})

    def hello(self, round_: int, endpoint: str, *, reset: bool = False) -> None:
        """Tell every neighbour we (re)started and which round we are at; ``reset``: our tracker is zeroed."""
        self.current_round = round_
        frames = self._control("hello", round_, endpoint=endpoint, reset=reset)
        for j in self.weights:
            self._send_to(j, frames)

    def _ping(self) -> None:
        """Tell the neighbours we are alive (and waiting); skipped for a peer whose queue is not empty."""
        now = self.clock()
        if now - self._last_ping < self.policy.ping_every:
            return
        self._last_ping = now
        frames = self._control("ping", self.current_round)
        for j in self.weights:
            if not self.outbox[j]:
                self.transport.send(j, frames)

    def _send_to(self, peer: int, frames: Frames) -> None:
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

    def goodbye(self, round_: int, grace: float | None = None) -> None:
        """Say bye, then keep serving until every neighbour said bye too (or ``grace`` seconds pass; default:
        the policy's goodbye grace).

        Our last round's message may still sit in a send queue, and a neighbour that restarts now may
        ask for it again; closing at once (linger 0) would strand such a neighbour.
        """
        frames = self._control("bye", round_)
        for j in self.weights:
            self._send_to(j, frames)
        deadline = self.clock() + (self.policy.grace if grace is None else grace)
        # A fault-injecting transport may still hold our last messages (injected delay): wait for them too.
        in_flight: Callable[[], int] = getattr(self.transport, "in_flight", lambda: 0)
        while ((self.byes < set(self.weights) or in_flight() or self._flush())
               and self.clock() < deadline and not self.should_stop()):
            self.poll(round_, timeout=0.05)
        missing = sorted(set(self.weights) - self.byes)
        if missing:
            log.warning("leaving without bye from neighbours %s", missing)

    def _send_round(self, round_: int, tensors: Mapping[str, torch.Tensor],
                    full: Mapping[str, torch.Tensor] | None = None) -> None:
        """Send the round's ``tensors`` to every neighbour; with compression, ``tensors`` is the compressed message
        and ``full`` the public copies, which go instead over an edge whose epoch starts with this message."""
        base = Header(version=PROTOCOL_VERSION, run=self.run, sender=self.node_id, round=round_, kind="round",
                      degree=0, epoch=0, tensors=specs_of(tensors))
        # One header per neighbour below; the tensor frames are shared (the full ones built only when needed).
        payloads: dict[bool, tuple[Header, list[memoryview]]] = {False: (base, tensor_frames(tensors))}
        declared = {j: self.edges.declare(j) for j in self.weights}
        self.reset_this_round.clear()
        self.declared[round_] = declared
        frames: dict[int, Frames] = {}
        for j in sorted(self.weights):
            d = declared[j]
            whole = full is not None and self.copies is not None and self.copies.sends_full(j, d.epoch)
            if whole and True not in payloads:
                assert full is not None
                payloads[True] = (replace(base, tensors=specs_of(full)), tensor_frames(full))
            head, payload = payloads[whole]
            # One small header per neighbour (its edge's epoch and whether we mix with it); the tensor frames
            # are shared views of the same memory.
            head_frame = encode_header(replace(head, degree=d.degree, epoch=d.epoch,
                                               meta={"live": d.live, "full": d.full}))
            frames[j] = [head_frame, *payload]
            self._send_to(j, frames[j])
        # Keep this and the previous round's frames for neighbours that restart and ask again.
        self.sent[round_] = frames
        for old in [r for r in self.sent if r < round_ - 1]:
            del self.sent[old]
        for old in [r for r in self.declared if r < round_]:
            del self.declared[old]

    def resend_state(self, before: int) -> dict[int, dict[int, list[bytes]]]:
        """The newest round before ``before`` that we sent, as the frames we sent (round -> peer -> frames), for a
        clean checkpoint. When the whole cluster stops, a neighbour may have stopped one round behind us and
        still need that message; after a resume nobody holds it any more unless we saved it. A payload frame
        shared by every peer's message (``_send_round``) becomes one bytes object, stored once."""
        held = [r for r in self.sent if r < before]
        if not held:
            return {}
        newest = max(held)
        copies: dict[int, bytes] = {}  # id(frame) -> its bytes (the frame objects live in self.sent meanwhile)

        def copy(frame: bytes | memoryview) -> bytes:
            if id(frame) not in copies:
                copies[id(frame)] = bytes(frame)
            return copies[id(frame)]

        return {newest: {j: [copy(f) for f in frames] for j, frames in self.sent[newest].items()}}

    def restore_sent(self, saved: Mapping[int, Mapping[int, list[bytes]]]) -> None:
        """Hold a clean checkpoint's saved round messages again: a neighbour's hello gets them resent."""
        for round_, peers in saved.items():
            self.sent[round_] = {j: list(frames) for j, frames in peers.items() if j in self.weights}

    # -- one round -------------------------------------------------------------------------------------
    def gossip_for(self, round_: int) -> Callable[..., dict[str, torch.Tensor]]:
        """The gossip callable the algorithm rule uses for ``round_``."""

        def gossip(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
            # The frames share memory with these tensors and are kept for resends. No copy is taken: a rule never
            # modifies a tensor it handed to its gossip (core/algorithms.py, tested), so what a neighbour
            # receives cannot change. A GPU or strided tensor is copied here, once.
            cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
            own_peaks = self._check_own(round_, cpu)
            self.current_round = round_
            device = next(iter(tensors.values())).device
            if self.copies is not None:
                mixed = self._compressed_round(round_, cpu, own_peaks, self.copies)
                return {k: v.to(device) for k, v in mixed.items()}
            self._send_round(round_, cpu)
            received = self._collect(round_)
            t0, c0 = self.clock(), time.thread_time()
            self._note_leads(own_peaks, self.peaks.pop(round_, {}))
            used = self._decide(round_, received)
            weights = {j: w for j, (_, w) in used.items()}
            mixed = {k: self._mix(k, cpu[k], {j: used[j][0][k] for j in used}, weights) for k in cpu}
            for j, (_, decl) in sorted(received.items()):
                self.edges.sync(j, decl.epoch)  # after recording: a dropped edge takes this round's flow back too
            self.mix_seconds += self.clock() - t0
            self.mix_cpu += time.thread_time() - c0
            if "x" in cpu:
                self.neighbour_x = {j: their["x"] for j, (their, _) in received.items()}
            self.last_round_used = {j: j in used for j in self.weights}
            return {k: v.to(device) for k, v in mixed.items()}

        return gossip

    def _compressed_round(self, round_: int, cpu: dict[str, torch.Tensor], own_peaks: Mapping[str, float],
                          copies: EdgeCopies) -> dict[str, torch.Tensor]:
        """One round of compressed gossip (peernet.core.edge_copies): send the compressed change of the public
        copies (the full copies over an edge that starts an epoch), collect, advance the neighbours' copies, mix.

        An edge the declarations would use but whose copy chain is broken here is dropped like a neighbour that
        missed the deadline: its epoch moves on, both ends start it again with a full message, and its tracker flow
        is rolled back at both ends. The tracker's flow per used edge is the term mixed in, γ W_ij (d̂_j − d̂_i)."""
        pending = copies.prepare(cpu, round_)
        self._send_round(round_, to_wire(pending.step.messages), full=pending.step.own)
        received = self._collect(round_)
        t0, c0 = self.clock(), time.thread_time()
        self._note_leads(own_peaks, self.peaks.pop(round_, {}))
        used = self._decide(round_, received)
        copies.receive(pending, round_, {j: self._incoming(their, decl.epoch) for j, (their, decl) in received.items()})
        for j in sorted(set(used) - pending.valid):
            del used[j]
            self.edges.drop(j)
            self.broken[j] += 1
        weights = {j: w for j, (_, w) in used.items()}
        mixed = copies.mixed(cpu, pending, weights)
        copies.commit(pending)
        if self.tracked in cpu:
            for j, term in copies.edge_terms(self.tracked, weights).items():
                self.edges.record_term(j, term)
        for j, (_, decl) in sorted(received.items()):
            self.edges.sync(j, decl.epoch)  # after recording: a dropped edge takes this round's flow back too
        self.mix_seconds += self.clock() - t0
        self.mix_cpu += time.thread_time() - c0
        if "x" in cpu:  # the neighbours' public copies of x: what this node knows of their models
            self.neighbour_x = {j: copies.gossip.copies[j]["x"] for j in sorted(pending.valid)}
        self.last_round_used = {j: j in used for j in self.weights}
        return mixed

    def _incoming(self, tensors: Mapping[str, torch.Tensor], epoch: int) -> Incoming:
        """A filed round message as its edge sees it: compressed messages, or the full public copies."""
        if not is_compressed(tensors):
            return Incoming(epoch, full=tensors)
        assert self.copies is not None
        # Checked when it was filed (_check_payload) and untouched since: only assembled here.
        return Incoming(epoch, compressed=unpack(self.copies.gossip.compressor, tensors, self._sizes()))

    def _mix(self, name: str, own: torch.Tensor, theirs: dict[int, torch.Tensor], weights: dict[int, float]
             ) -> torch.Tensor:
        """One tensor's mix (plain, or ClippedGossip when the run clips it), and for the tracker tensor each used
        edge's flow, recorded as what was mixed in so that a rollback takes back exactly that."""
        tau = self.clip.get(name)
        tracked = name == self.tracked
        if tau is None:
            mixed = mix_one(own.clone(), theirs, weights)
            if tracked:
                for j in sorted(theirs):
                    self.edges.record(j, weights[j], own, theirs[j])
            return mixed
        pulled = pulls(own, theirs, tau)
        if tracked:
            for j in sorted(pulled):
                self.edges.record_pull(j, weights[j], pulled[j])
        return clipped_mix_one(own, pulled, weights)

    def _check_own(self, round_: int, tensors: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Our round tensors' largest magnitudes; StateOutOfBounds when any is NaN/Inf or above ``max_abs``.

        A neighbour would drop such a message and count us faulty, although we may only have been pushed there
        by someone else's values. So we never send it: we count it, name the neighbours whose values led ours
        the most (``lead``), and stop.
        """
        try:
            return check_finite(tensors, self.max_abs)
        except CodecError as exc:
            self.self_over_bound += 1
            top = max(self.lead.values(), default=0.0)
            suspects = tuple(sorted(j for j, v in self.lead.items() if v == top and v > 0))
            source = (f"the largest values came in from neighbour(s) {list(suspects)} (up to {top:.3g} above "
                      "ours): the source, or a node relaying it" if suspects else "no neighbour's values ever led ours")
            log.error("round %d: own tensors out of bounds (%s); not sent. %s", round_, exc, source)
            raise StateOutOfBounds(f"round {round_}: this node's own tensors are out of bounds ({exc}); its "
                                   f"neighbours would reject them and blame it, so it stops instead of sending "
                                   f"them; {source} (docs/security.md, 'Blame')", suspects) from None

    def _note_leads(self, own: Mapping[str, float], theirs: Mapping[int, Mapping[str, float]]) -> None:
        """Keep, per neighbour, the most by which its values' magnitude exceeded ours this round."""
        for j, peaks in theirs.items():
            lead = max((peaks[k] - own[k] for k in peaks if k in own), default=-math.inf)
            self.lead[j] = max(self.lead.get(j, -math.inf), lead)

    def _decide(self, round_: int, received: Mapping[int, tuple[dict[str, torch.Tensor], Declaration]],
                ) -> dict[int, tuple[dict[str, torch.Tensor], float]]:
        """Which edges this round uses, with their weights; neighbours that missed the deadline are dropped."""
        mine = self.declared[round_]
        used: dict[int, tuple[dict[str, torch.Tensor], float]] = {}
        for j in sorted(self.weights):
            if j in received:
                tensors, theirs = received[j]
                if edge_used(mine[j], theirs) and j not in self.reset_this_round:
                    used[j] = (tensors, edge_weight(mine[j], theirs, self.weights[j]))
            elif mine[j].live and j not in self.byes:  # a neighbour that said bye has finished, not failed
                self.edges.drop(j)
                if round_ in self.skipped[j] or self._went_on(j, round_):
                    self.missed[j] += 1  # it is ahead of us: its message for this round was dropped or lost
                    continue
                self.timeouts[j] += 1
                log.warning("round %d: neighbour %d missed the deadline; excluded (epoch %d)", round_, j,
                            self.edges.epoch[j])
        return used

    def _check_behind(self, round_: int) -> None:
        """Raise CatchUp when the policy says we stalled behind every neighbour (RoundPolicy.catch_up_to)."""
        target = self.policy.catch_up_to(round_, (r for j, r in self.seen_round.items() if j not in self.byes))
        if target is not None:
            raise CatchUp(target)

    def _collect(self, round_: int) -> dict[int, tuple[dict[str, torch.Tensor], Declaration]]:
        t0, c0 = self.clock(), time.thread_time()
        mine = self.declared[round_]
        awaited = {j for j, d in mine.items() if d.live and j not in self.byes}
        self._after_silence(round_)
        if not awaited:
            self._drain(round_)
        patience = self.deadline.current()
        ceiling = self.policy.ceiling
        complete = False
        while True:
            have = self.inbox.get(round_, {})
            missing = awaited - have.keys()
            if not missing:
                complete = True
                break
            if self.should_stop():
                raise RoundAbandoned(round_)
            self._after_silence(round_)  # frozen while we waited
            self._check_behind(round_)
            if missing <= {j for j in missing if round_ in self.skipped[j] or self._went_on(j, round_)}:
                break  # what we still miss was dropped as too far ahead, or its sender went on: it is not coming
            now = self.clock()
            elapsed = now - t0
            if self.policy.give_up(elapsed=elapsed, patience=patience,
                                   silences=(now - self.last_heard.get(j, -math.inf) for j in missing)):
                break
            self._ping()
            self.poll(round_, timeout=min(0.1, max(0.0, ceiling - elapsed)))
        waited = self.clock() - t0
        self.wait_seconds += waited
        self.wait_cpu += time.thread_time() - c0
        self.max_wait = max(self.max_wait, waited)
        if complete:
            self.deadline.record(waited)
        got = dict(self.inbox.get(round_, {}))
        for old in [r for r in self.inbox if r <= round_]:
            del self.inbox[old]
        for old in [r for r in self.peaks if r < round_]:  # this round's are read once the round is mixed
            del self.peaks[old]
        return got

    def _went_on(self, j: int, round_: int) -> bool:
        """``j`` went on without us (RoundPolicy.went_on): not waiting for us, its message for ours never late."""
        return self.policy.went_on(self.seen_round.get(j, -1), round_)

    def _after_silence(self, round_: int) -> None:
        """After a silence longer than the deadline floor (SIGSTOP, a long pause), read the backlog at once.

        By then our neighbours have stopped waiting for us and gone on, and what they sent meanwhile waits in
        our socket, oldest first. Read as the rounds need it, one round at a time, that backlog takes as many
        rounds to get through as it holds (a training step each, mixing with nobody) while the neighbours go
        on, and the catch-up comes that much later (on CI: 27 rounds replayed, rejoined 19 before the end).
        Read at once, it shows their current round, and ``_check_behind`` jumps now. Harmless when we are not
        behind: a neighbour that still waits for us is at most one round ahead, so nothing of it is dropped.
        """
        last = self._last_look
        if last is not None and self.policy.stalled(self.clock() - last):
            # A short wait per message: with the receive queue full, libzmq stopped reading the connection, and
            # refills the queue from it only after we have taken some (asynchronously, in its I/O thread).
            self._drain(round_, per_neighbour=self.policy.stall_drain_limit, wait=self.policy.stall_wait)
            self._check_behind(round_)

    def _drain(self, round_: int, per_neighbour: int | None = None, wait: float = 0.0) -> None:
        """Take what has arrived without waiting, when this round awaits nobody.

        A message is what re-admits an excluded neighbour (``edges.alive``): a node that excluded every
        neighbour in one round (all late at once, e.g. on an overloaded host) and then stopped reading its
        socket would never hear them again, and would train alone, ever further ahead, for the rest of the run.
        """
        limit = self.policy.drain_limit if per_neighbour is None else per_neighbour
        for _ in range(limit * max(1, len(self.weights))):
            if not self.poll(round_, timeout=wait):
                break

    def wait_replies(self, round_: int, timeout: float) -> None:
        """After our hello: collect the neighbours' answers (their rounds, their last messages) for a while."""
        self.joining = True
        deadline = self.clock() + timeout
        try:
            while len(self.replies) < len(self.weights) and self.clock() < deadline and not self.should_stop():
                self._ping()  # we are alive: a neighbour waiting for us keeps waiting
                self.poll(round_, timeout=0.1)
        finally:
            self.joining = False

    def skip_to(self, round_: int) -> None:
        """Forget everything buffered before ``round_`` (after a catch-up or a rejoin)."""
        self.current_round = round_
        for old in [r for r in self.inbox if r < round_]:
            del self.inbox[old]
        for old in [r for r in self.peaks if r < round_]:
            del self.peaks[old]


def _valid_endpoint(endpoint: object) -> bool:
    """A hello's endpoint is followed only if it is one a node can bind and be dialled at (the topology file's
    rule: ``tcp://HOST:PORT`` with a real port, or ``ipc://PATH``) or an in-process one."""
    if not isinstance(endpoint, str):
        return False
    return _MEMORY_ENDPOINT.fullmatch(endpoint) is not None or endpoint_problem(endpoint) is None
