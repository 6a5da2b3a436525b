"""In-process transport with ZeroMQ's semantics (bounded pipes, non-blocking send) for tests and fault injection."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from types import TracebackType

from peernet.errors import TransportError
from peernet.transport.placement import MAX_FRAMES, Place, fill

_SCHEME = "mem://"


class MemoryHub:
    """The in-process "network": maps ``mem://<id>`` endpoints to the transport currently bound there."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bound: dict[str, MemoryTransport] = {}

    def _register(self, transport: MemoryTransport) -> None:
        # Like ROUTER_HANDOVER: a restarted node with the same id takes the endpoint over.
        with self._lock:
            self._bound[transport.endpoint] = transport

    def _unregister(self, transport: MemoryTransport) -> None:
        with self._lock:
            if self._bound.get(transport.endpoint) is transport:
                del self._bound[transport.endpoint]

    def lookup(self, endpoint: str) -> MemoryTransport | None:
        """The live transport bound at ``endpoint``, or None if nothing runs there."""
        with self._lock:
            return self._bound.get(endpoint)


class MemoryTransport:
    """Same interface as :class:`~peernet.transport.zmq_transport.ZmqTransport`, over queues in one process.

    Each sender→receiver pipe holds at most ``hwm`` undelivered messages (as a ZeroMQ pipe does), so one
    slow link does not starve the others. Frames are copied on send, so a sender that later mutates its
    tensors cannot change what the receiver sees. All methods are thread-safe.
    """

    def __init__(self, node_id: int, hub: MemoryHub, *, hwm: int = 4, max_msg_size: int = -1) -> None:
        if node_id < 0:
            raise TransportError(f"node id must be non-negative, got {node_id}")
        if hwm < 1:
            raise TransportError(f"hwm must be at least 1, got {hwm}")
        self.node_id = node_id
        self.endpoint = f"{_SCHEME}{node_id}"
        self._hub = hub
        self._hwm = hwm
        self._max_msg_size = max_msg_size
        self._cond = threading.Condition()
        self._inbox: deque[tuple[int, list[memoryview]]] = deque()
        self._pending: dict[int, int] = {}
        self._peers: dict[int, str] = {}
        self._closed = False
        self.stats: dict[str, int] = dict.fromkeys(
            ("bytes_out", "bytes_in", "msgs_out", "msgs_in", "send_would_block", "bad_identity", "oversize",
             "auth_mismatch"), 0
        )
        hub._register(self)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"node {self.node_id}: transport is closed")

    def connect(self, peer_id: int, endpoint: str) -> None:
        """Remember where ``peer_id`` lives; the peer need not be running yet."""
        self._check_open()
        if not endpoint.startswith(_SCHEME):
            raise TransportError(f"node {self.node_id}: cannot connect to peer {peer_id} at {endpoint!r}: not mem://")
        with self._cond:
            self._peers[peer_id] = endpoint

    def disconnect(self, peer_id: int) -> None:
        """Forget ``peer_id``; unknown ids are ignored."""
        with self._cond:
            self._peers.pop(peer_id, None)

    def connected(self) -> dict[int, str]:
        """Peers we hold a connection for, with their endpoints."""
        with self._cond:
            return dict(self._peers)

    def send(self, peer_id: int, frames: Sequence[bytes | memoryview]) -> bool:
        """Deliver a copy of ``frames``; False (never blocking) if the peer is unknown, not running or full."""
        self._check_open()
        if not frames:
            raise TransportError(f"node {self.node_id}: refusing to send an empty message to peer {peer_id}")
        with self._cond:
            endpoint = self._peers.get(peer_id)
        target = None if endpoint is None else self._hub.lookup(endpoint)
        if target is None:
            return False
        copied = [memoryview(bytearray(f)) for f in frames]
        if not target._deliver(self.node_id, copied):
            with self._cond:
                self.stats["send_would_block"] += 1
            return False
        with self._cond:
            self.stats["msgs_out"] += 1
            self.stats["bytes_out"] += sum(f.nbytes for f in copied)
        return True

    def _deliver(self, sender: int, frames: list[memoryview]) -> bool:
        with self._cond:
            if self._closed or self._pending.get(sender, 0) >= self._hwm:
                return False
            self._pending[sender] = self._pending.get(sender, 0) + 1
            self._inbox.append((sender, frames))
            self._cond.notify()
            return True

    def recv(self, timeout: float, place: Place | None = None) -> tuple[int, list[memoryview]] | None:
        """Wait up to ``timeout`` seconds for one message; returns (sender id, frames) or None.

        ``place`` as for :meth:`ZmqTransport.recv`: the payload is copied into the views it returns."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while True:
                self._check_open()
                if self._inbox:
                    sender, frames = self._inbox.popleft()
                    self._pending[sender] -= 1
                    size = sum(f.nbytes for f in frames)
                    if 0 <= self._max_msg_size < size:
                        self.stats["oversize"] += 1
                        continue
                    self.stats["msgs_in"] += 1
                    self.stats["bytes_in"] += size
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
        # Outside the lock: ``place`` is the receiver's code, and senders must not wait on it.
        views = place(sender, frames[0]) if place is not None and len(frames) > 1 else None
        return sender, frames if views is None else [frames[0], *_copied_into(views, frames[1:])]

    def pending(self) -> bool:
        """Whether a message is waiting to be received (what a scheduler waiting on us needs to know)."""
        with self._cond:
            return bool(self._inbox)

    def close(self) -> None:
        """Leave the hub and drop queued messages; safe to call twice. A blocked ``recv`` raises TransportError."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._inbox.clear()
            self._pending.clear()
            self._peers.clear()
            self._cond.notify_all()
        self._hub._unregister(self)

    def __enter__(self) -> MemoryTransport:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemoryTransport(node_id={self.node_id}, endpoint={self.endpoint!r}, peers={sorted(self.connected())})"


def _copied_into(views: Sequence[memoryview], frames: list[memoryview]) -> list[memoryview]:
    """The payload ``frames`` as :func:`fill` leaves them in ``views`` (copied, cut where a view is shorter)."""
    pending = iter(frames)
    left = len(frames)

    def read_into(view: memoryview) -> int:
        nonlocal left
        frame = next(pending)
        left -= 1
        n = min(frame.nbytes, view.nbytes)
        view[:n] = frame[:n]
        return frame.nbytes

    return fill(views, read_into, lambda: left > 0, MAX_FRAMES)
