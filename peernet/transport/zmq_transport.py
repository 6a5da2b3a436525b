"""ZeroMQ transport: one bound ROUTER for all inbound traffic, one DEALER per neighbour (zguide "Harmony")."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import zmq

from peernet.core.topology_limits import MAX_NODE_ID
from peernet.errors import TransportError
from peernet.security.zap import ZapHandler, user_id_of
from peernet.transport.handshakes import HandshakeMonitor, count_handshakes
from peernet.transport.placement import MAX_FRAMES, Place, fill
from peernet.transport.trim import hostile_message_dropped, trim_if_due

log = logging.getLogger("peernet.transport")

_RECONNECT_IVL_MS = 100
_RECONNECT_IVL_MAX_MS = 5000
# No ZMTP heartbeats: with a small RCVHWM, libzmq 4.3.x aborts the whole process ("Assertion failed:
# !_io_error (stream_engine_base.cpp)", zeromq/libzmq#4364, #4767) when a heartbeat timeout resets a connection
# whose receiver was slow or stopped (SIGSTOP). Liveness comes from the exchange's own pings instead, and a
# peer that vanished without closing its connection is found by TCP keepalive.
_TCP_KEEPALIVE_IDLE_S = 10
_TCP_KEEPALIVE_INTVL_S = 5
_TCP_KEEPALIVE_CNT = 3
# A routing id longer than this is not an ASCII decimal node id we would ever assign.
_MAX_ID_DIGITS = len(str(MAX_NODE_ID))


@dataclass(frozen=True)
class CurveKeys:
    """Our CURVE keypair and our peers' public keys (z85 bytes, as from ``zmq.curve_keypair``).

    ``peers`` is both whom we may dial and the ROUTER's allowlist: only these keys get through, and a
    connection with peer j's key may only speak as node j.
    """

    public: bytes
    secret: bytes
    peers: Mapping[int, bytes] = field(default_factory=dict)

    def allowlist(self) -> dict[bytes, str]:
        """Peer public key -> the User-Id (the node id in decimal) the ZAP handler gives its connections."""
        owners: dict[bytes, str] = {}
        for peer, key in self.peers.items():
            if key in owners:
                raise TransportError(f"peers {owners[key]} and {peer} have the same CURVE public key")
            owners[key] = encode_routing_id(peer).decode()
        return owners


def encode_routing_id(node_id: int) -> bytes:
    """Node id as ASCII decimal: never starts with 0x00, which libzmq reserves for generated ids."""
    if not 0 <= node_id <= MAX_NODE_ID:
        raise TransportError(f"node id must be in 0..{MAX_NODE_ID}, got {node_id}")
    return str(node_id).encode("ascii")


def connection_id(node_id: int) -> bytes:
    """The routing id of one of our connections: ``<node id>.<16 random hex digits>``.

    A fresh one per connection, so no two connections ever present the same routing id: the ROUTER needs
    no handover (a restarted node simply has a new id), and a connection claiming another node's id can
    never take that node's live connection over, since it cannot know its random part.
    """
    return encode_routing_id(node_id) + b"." + secrets.token_hex(8).encode("ascii")


def decode_routing_id(raw: bytes) -> int | None:
    """The node id a routing id claims: ``<id>`` (canonical decimal, as :func:`encode_routing_id` writes it)
    or ``<id>.<16 hex digits>`` (:func:`connection_id`); None for anything else (e.g. b"007", b"\x00...")."""
    head, dot, nonce = raw.partition(b".")
    if dot and (len(nonce) != 16 or not all(c in b"0123456789abcdef" for c in nonce)):
        return None
    if not 0 < len(head) <= _MAX_ID_DIGITS or not head.isdigit():
        return None
    if (len(head) > 1 and head[0:1] == b"0") or int(head) > MAX_NODE_ID:
        return None
    return int(head)


def read_bounded(sock: zmq.Socket, first: zmq.Frame, max_frames: int, max_bytes: int) -> list[zmq.Frame] | None:
    """The rest of a multipart message whose frame ``first`` was just read, keeping at most ``max_frames``
    frames and ``max_bytes`` bytes in all (``max_bytes`` < 0: no byte bound). A message over either bound is
    read to its end and discarded frame by frame, and None is returned: a message of a million tiny frames then
    costs a loop, not a million buffers held at once (the rest of a multipart message is already queued, so
    these reads never block)."""
    parts = [first]
    size = len(first)
    over = 0 <= max_bytes < size
    more = first.more
    while more:
        frame = sock.recv(copy=False)
        more = frame.more
        if over:
            continue
        size += len(frame)
        parts.append(frame)
        if len(parts) > max_frames + 1 or 0 <= max_bytes < size:
            over = True
            parts = []
    return None if over else parts


def recv_bounded(sock: zmq.Socket, max_frames: int, max_bytes: int) -> list[zmq.Frame] | None:
    """Receive one multipart message (NOBLOCK on its first frame) within the bounds of :func:`read_bounded`."""
    return read_bounded(sock, sock.recv(zmq.NOBLOCK, copy=False), max_frames, max_bytes)


def _advertised(last_endpoint: str, advertise: str | None) -> str:
    """Swap the host of ``tcp://host:port`` for ``advertise`` (a wildcard bind is not dialable); a full
    ``tcp://HOST:PORT`` is taken as it is (e.g. behind a NAT that maps another port)."""
    if advertise is None:
        return last_endpoint
    if advertise.startswith("tcp://"):
        return advertise
    scheme, sep, rest = last_endpoint.partition("://")
    _, colon, port = rest.rpartition(":")
    if not sep or not colon:
        raise TransportError(f"cannot advertise host {advertise!r} for endpoint {last_endpoint!r}: no port")
    host = f"[{advertise}]" if ":" in advertise and not advertise.startswith("[") else advertise
    return f"{scheme}://{host}:{port}"


class ZmqTransport:
    """Moves opaque multipart frame lists between node ids; never blocks on send, never pickles.

    Frames of 64 KiB or more are sent zero-copy (pyzmq's ``copy_threshold``): the caller must not modify
    a sent buffer afterwards, since libzmq's I/O thread may still be reading it. Send a snapshot.

    With ``curve`` the ROUTER is a CURVE server whose ZAP handler admits exactly ``curve.peers``' keys, and a
    message whose routing id is not the node its key belongs to is dropped and counted in
    ``stats["auth_mismatch"]``: nobody can speak for another node. Such a transport runs the ZAP handler of
    its ZeroMQ context, so two CURVE transports cannot share one context.

    ``max_msg_size`` bounds the total payload of a delivered message. libzmq's ``MAXMSGSIZE`` applies per
    frame, so a single oversized frame gets its peer disconnected there, while a message of many small
    frames that adds up to more is dropped here and counted in ``stats["oversize"]``.

    Handshakes that fail before the ZAP handler is asked (a client without CURVE, a wrong server key, a
    malformed greeting) are counted in ``stats["failed_handshakes"]``; those the ZAP handler refuses, in
    ``stats["refused_handshakes"]``. Both are brought up to date by every ``recv``.
    """

    def __init__(
        self,
        node_id: int,
        bind: str = "tcp://127.0.0.1:*",
        *,
        advertise: str | None = None,
        max_msg_size: int = -1,
        sndhwm: int = 4,
        rcvhwm: int = 4,
        curve: CurveKeys | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.node_id = node_id
        encode_routing_id(node_id)  # checks the id's range now, not at the first connect
        self._max_msg_size = max_msg_size
        self._sndhwm = sndhwm
        self._rcvhwm = rcvhwm
        self._curve = curve
        self._own_context = context is None
        self._ctx: zmq.Context = zmq.Context() if context is None else context
        self._dealers: dict[int, tuple[str, zmq.Socket]] = {}
        self._closed = False
        self.stats: dict[str, int] = dict.fromkeys(
            ("bytes_out", "bytes_in", "msgs_out", "msgs_in", "send_would_block", "bad_identity", "oversize",
             "auth_mismatch", "refused_handshakes", "failed_handshakes"), 0
        )
        self._zap: ZapHandler | None = None
        self._handshakes: HandshakeMonitor | None = None
        self._router: zmq.Socket = self._ctx.socket(zmq.ROUTER)
        self._poller = zmq.Poller()
        self._wire = 0  # bytes of the message being read, as they came (recv_into)
        try:
            self._configure_common(self._router)
            # Before the bind, so that no handshake goes uncounted.
            self._handshakes = HandshakeMonitor(self._ctx, self._router, f"node {node_id}")
            self._poller.register(self._router, zmq.POLLIN)
            self._poller.register(self._handshakes.socket, zmq.POLLIN)
            # No ROUTER_HANDOVER: every connection has its own random routing id (connection_id), so a second
            # connection presenting a live one's id is refused by libzmq instead of taking the link over.
            self._router.setsockopt(zmq.MAXMSGSIZE, max_msg_size)
            if curve is not None:
                # The handler must answer before the first peer connects, so it starts before the bind.
                self._zap = ZapHandler(self._ctx, curve.allowlist(), name=f"node {node_id}")
                self._router.curve_server = True
                self._router.curve_publickey = curve.public
                self._router.curve_secretkey = curve.secret
            self._router.bind(bind)
            last = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
            self.endpoint: str = _advertised(last, advertise)
        except (zmq.ZMQError, TransportError) as exc:
            self.close()
            raise TransportError(f"node {node_id}: cannot bind ROUTER on {bind!r}: {exc}") from exc

    def _configure_common(self, sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self._sndhwm)
        sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, _TCP_KEEPALIVE_IDLE_S)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, _TCP_KEEPALIVE_INTVL_S)
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, _TCP_KEEPALIVE_CNT)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"node {self.node_id}: transport is closed")

    def connect(self, peer_id: int, endpoint: str) -> None:
        """Dial ``peer_id`` at ``endpoint``; a changed endpoint replaces the old DEALER (queued messages dropped).

        The new DEALER is set up first: an endpoint that cannot be dialled raises TransportError and leaves the
        working connection as it was.
        """
        self._check_open()
        current = self._dealers.get(peer_id)
        if current is not None and current[0] == endpoint:
            return
        sock = self._ctx.socket(zmq.DEALER)
        try:
            self._configure_common(sock)
            sock.setsockopt(zmq.ROUTING_ID, connection_id(self.node_id))
            # IMMEDIATE: no queueing onto a pipe not yet connected, so an absent peer means Again, not a backlog.
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_IVL_MS)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, _RECONNECT_IVL_MAX_MS)
            if self._curve is not None:
                server_key = self._curve.peers.get(peer_id)
                if server_key is None:
                    raise TransportError(f"node {self.node_id}: no CURVE public key for peer {peer_id}")
                sock.curve_serverkey = server_key
                sock.curve_publickey = self._curve.public
                sock.curve_secretkey = self._curve.secret
            sock.connect(endpoint)
        except (zmq.ZMQError, TransportError) as exc:
            sock.close(linger=0)
            if isinstance(exc, TransportError):
                raise
            where = f"peer {peer_id} at {endpoint!r}"
            raise TransportError(f"node {self.node_id}: cannot connect to {where}: {exc}") from exc
        self.disconnect(peer_id)
        self._dealers[peer_id] = (endpoint, sock)

    def disconnect(self, peer_id: int) -> None:
        """Close the DEALER to ``peer_id``, dropping anything still queued; unknown ids are ignored."""
        entry = self._dealers.pop(peer_id, None)
        if entry is not None:
            entry[1].close(linger=0)

    def connected(self) -> dict[int, str]:
        """Peers we hold a DEALER for, with the endpoint each was dialled at."""
        return {peer: ep for peer, (ep, _) in self._dealers.items()}

    def send(self, peer_id: int, frames: Sequence[bytes | memoryview]) -> bool:
        """Queue one multipart message; False (never blocking) if the peer is unknown, unconnected or full."""
        self._check_open()
        if not frames:
            raise TransportError(f"node {self.node_id}: refusing to send an empty message to peer {peer_id}")
        entry = self._dealers.get(peer_id)
        if entry is None:
            return False
        try:
            # libzmq checks the HWM on the first frame only, so a message is either queued whole or not at all.
            entry[1].send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.stats["send_would_block"] += 1
            return False
        except zmq.ZMQError as exc:
            raise TransportError(f"node {self.node_id}: send to peer {peer_id} failed: {exc}") from exc
        self.stats["msgs_out"] += 1
        self.stats["bytes_out"] += sum(memoryview(f).nbytes for f in frames)
        return True

    def recv(self, timeout: float, place: Place | None = None) -> tuple[int, list[memoryview]] | None:
        """Wait up to ``timeout`` seconds for one valid message; returns (sender id, frames) or None.

        With ``place``, a message's payload frames are received straight into the views ``place`` returns for
        its sender and header (see :func:`peernet.transport.placement.fill`): no buffer per frame, no copy
        after. Messages from no node, or from a connection authenticated as another node, never reach it.
        """
        self._check_open()
        count_handshakes(self.stats, self._zap, self._handshakes)
        trim_if_due()  # a no-op unless this process is a daemon that was attacked (peernet.transport.trim)
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            remaining_ms = max(0, round((deadline - time.monotonic()) * 1000))
            ready = dict(self._poller.poll(remaining_ms))
            if self._router not in ready:
                # At most handshake events: count them and keep waiting for a message.
                count_handshakes(self.stats, self._zap, self._handshakes)
                if not ready or time.monotonic() >= deadline:
                    return None
                continue
            self._wire = 0
            try:
                got = self._read_message(place)
            except zmq.Again:
                continue
            if 0 <= self._max_msg_size < self._wire:
                hostile_message_dropped()  # frames read into place()'s views, or discarded, past the bound
            if got is not None:
                size = sum(f.nbytes for f in got[1])
                if 0 <= self._max_msg_size < size:
                    self.stats["oversize"] += 1
                    hostile_message_dropped()
                else:
                    self.stats["msgs_in"] += 1
                    self.stats["bytes_in"] += size
                    return got
            if time.monotonic() >= deadline:
                return None

    def _read_message(self, place: Place | None) -> tuple[int, list[memoryview]] | None:
        """Read one whole message off the ROUTER (its first frame without blocking); None when it is dropped."""
        routing = self._router.recv(zmq.NOBLOCK, copy=False)
        sender = decode_routing_id(routing.bytes)
        if sender is None:
            self.stats["bad_identity"] += 1
        elif self._zap is not None and user_id_of(routing) != str(sender):
            self._auth_mismatch(sender, user_id_of(routing))
        elif not routing.more:
            return sender, []
        else:
            header = self._router.recv(copy=False)
            views = place(sender, header.buffer) if place is not None and header.more else None
            if views is not None:
                return sender, [header.buffer, *fill(views, self._recv_into, self._more, MAX_FRAMES)]
            rest = read_bounded(self._router, header, MAX_FRAMES, self._max_msg_size)
            if rest is not None:
                return sender, [p.buffer for p in rest]
            self.stats["oversize"] += 1
            hostile_message_dropped()
            return None
        if routing.more:
            fill((), self._recv_into, self._more, 0)  # read the rest of the message and throw it away
        return None

    def _recv_into(self, view: memoryview) -> int:
        size = int(self._router.recv_into(view))
        self._wire += size  # the frame's length on the wire, whatever of it the view took
        return size

    def _more(self) -> bool:
        return bool(self._router.getsockopt(zmq.RCVMORE))

    def _auth_mismatch(self, routing_id: int, user: str | None) -> None:
        self.stats["auth_mismatch"] += 1
        count = self.stats["auth_mismatch"]
        if count <= 10 or count % 1000 == 0:
            log.warning("node %d: dropped a message sent as node %d over a connection authenticated as %s "
                        "(%d such so far)", self.node_id, routing_id, f"node {user}" if user else "nobody", count)

    def close(self) -> None:
        """Close every socket with linger 0 (and our own context); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for peer in list(self._dealers):
            self.disconnect(peer)
        if self._handshakes is not None:
            self._handshakes.close()
        self._router.close(linger=0)
        if self._zap is not None:
            self._zap.close()
        if self._own_context:
            self._ctx.term()

    def __enter__(self) -> ZmqTransport:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ZmqTransport(node_id={self.node_id}, endpoint={self.endpoint!r}, peers={sorted(self._dealers)})"
