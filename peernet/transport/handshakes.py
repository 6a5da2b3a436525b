"""Counting the handshakes a listening socket saw fail before its ZAP handler was asked, from libzmq's monitor."""

from __future__ import annotations

import contextlib
import logging
import secrets
import struct

import zmq

from peernet.errors import TransportError
from peernet.security.zap import ZapHandler

log = logging.getLogger("peernet.transport")

#: Handshakes that failed before ZAP answered: a client without CURVE, or with another mechanism (mechanism
#: mismatch), a CURVE client that used the wrong server key (its HELLO does not decrypt), a malformed greeting,
#: a connection dropped halfway. libzmq's third kind, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, is raised only for a ZAP
#: reply of 300, 400 or 500 (src/zap_client.cpp): those handshakes the ZAP handler counts already
#: (``refused_handshakes``), so it is left out here rather than counted twice.
FAILED_EVENTS = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
_EVENT = struct.Struct("=HI")  # a monitor event's first frame: 16-bit event id, 32-bit value


class HandshakeMonitor:
    """Counts ``sock``'s failed handshakes. Create it before ``sock`` binds; ``socket`` is what to poll, and
    ``drain()`` (never blocking) reads what the I/O thread reported since and returns the count so far.

    The events wait in an unbounded queue until drained: libzmq sends them from its I/O thread with a blocking
    send, so a bounded queue that filled up (a stranger failing handshakes faster than the owner drains) would
    stall all of that context's traffic (src/socket_base.cpp, ``monitor_event``). An event takes about 128 bytes
    (two of libzmq's 64-byte message entries), and the owner drains them on every receive.
    """

    def __init__(self, context: zmq.Context, sock: zmq.Socket, name: str) -> None:
        self.name = name
        self.failed = 0
        self._watched = sock
        endpoint = f"inproc://peernet-handshakes-{secrets.token_hex(8)}"
        try:
            sock.monitor(endpoint, FAILED_EVENTS)
        except zmq.ZMQError as exc:
            raise TransportError(f"{name}: cannot monitor handshakes: {exc}") from exc
        self.socket: zmq.Socket = context.socket(zmq.PAIR)
        self.socket.linger = 0
        self.socket.rcvhwm = 0  # unbounded, set before connecting: see the class docstring
        self.socket.connect(endpoint)

    def drain(self) -> int:
        """Count the events queued so far (without waiting) and return the number of failed handshakes seen."""
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return self.failed
            if len(frames) != 2 or len(frames[0]) != _EVENT.size:
                continue
            event, value = _EVENT.unpack(frames[0])
            if event & FAILED_EVENTS:
                self.failed += 1
                log.debug("%s: handshake from %s failed (event %#x, value %#x; %d so far)", self.name,
                          frames[1].decode(errors="replace"), event, value, self.failed)

    def close(self) -> None:
        """Stop monitoring and close the queue; safe to call twice, and before the watched socket is closed."""
        if self.socket.closed:
            return
        if not self._watched.closed:
            # A context already shutting down refuses: then nothing is monitored any more anyway.
            with contextlib.suppress(zmq.ZMQError):
                self._watched.disable_monitor()
        self.socket.close(linger=0)


def count_handshakes(counts: dict[str, int], zap: ZapHandler | None, monitor: HandshakeMonitor | None) -> None:
    """Bring a listening socket's ``refused_handshakes`` (keys its ZAP handler turned away) and
    ``failed_handshakes`` (handshakes that failed before ZAP was asked) in ``counts`` up to date."""
    if zap is not None:
        counts["refused_handshakes"] = zap.refused
    if monitor is not None:
        counts["failed_handshakes"] = monitor.drain()
