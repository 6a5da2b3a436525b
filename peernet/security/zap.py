"""A ZAP handler (ZeroMQ RFC 27) that admits exactly an allowlist of CURVE keys and names each one."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping

import zmq
from zmq.utils import z85

from peernet.errors import TransportError
from peernet.security.keys import is_z85_key

log = logging.getLogger("peernet.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_POLL_MS = 100  # how quickly the handler thread notices close()
_LOOPBACK = re.compile(r"(127(\.\d{1,3}){3}|localhost|\[?::1\]?)")


def user_id_of(frame: zmq.Frame) -> str | None:
    """The User-Id the ZAP handler gave the connection a received frame came over (None without ZAP)."""
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    return user if isinstance(user, str) else None


class ZapHandler:
    """Answers the ZAP requests of every CURVE server socket of ``context`` from a daemon thread.

    ``allowed`` maps z85 public keys to the User-Id a connection with that key gets (a node id, or a
    client name); every other key, and every other mechanism, is refused. libzmq looks the handler up
    per context, so a context holds at most one: create it before binding the CURVE server socket, and
    ``close()`` it before terminating the context.
    """

    def __init__(self, context: zmq.Context, allowed: Mapping[bytes, str], *, name: str = "zap") -> None:
        for key in allowed:
            if not is_z85_key(key):
                raise TransportError(f"{name}: allowlist entry {key!r} is not a 40-character z85 CURVE key")
        self.allowed = dict(allowed)
        self.name = name
        self.refused = 0
        self._stop = threading.Event()
        self._sock: zmq.Socket[bytes] = context.socket(zmq.REP)
        self._sock.linger = 0
        try:
            self._sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self._sock.close(linger=0)
            raise TransportError(f"{name}: cannot start the ZAP handler (one per ZeroMQ context): {exc}") from None
        self._thread = threading.Thread(target=self._serve, name=f"{name}-zap", daemon=True)
        self._thread.start()

    def answer(self, request: list[bytes]) -> list[bytes]:
        """The reply frames to one ZAP request: 200 with the User-Id for an allowed CURVE key, else 400."""
        if len(request) < 6:
            request_id = request[1] if len(request) > 1 else b""
            return [b"1.0", request_id, b"400", b"malformed ZAP request", b"", b""]
        version, request_id, _domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        if version != b"1.0":
            return [b"1.0", request_id, b"400", b"unsupported ZAP version", b"", b""]
        if mechanism == b"CURVE" and len(credentials) == 1 and len(credentials[0]) == 32:
            key = z85.encode(credentials[0])
            user = self.allowed.get(key)
            if user is not None:
                return [b"1.0", request_id, b"200", b"OK", user.encode(), b""]
            self._refuse(f"unknown CURVE key {key.decode()} from {address.decode(errors='replace')}")
            return [b"1.0", request_id, b"400", b"unknown key", b"", b""]
        self._refuse(f"{mechanism.decode(errors='replace')} connection from {address.decode(errors='replace')}")
        return [b"1.0", request_id, b"400", b"CURVE required", b"", b""]

    def _refuse(self, what: str) -> None:
        self.refused += 1
        # A stranger may retry many times a second: log the first few, then a sample.
        if self.refused <= 10 or self.refused % 1000 == 0:
            log.warning("%s: refused %s (%d refused so far)", self.name, what, self.refused)

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._sock.poll(_POLL_MS, zmq.POLLIN):
                    continue
                try:
                    request = self._sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                self._sock.send_multipart(self.answer(request))
        except zmq.ContextTerminated:
            pass
        finally:
            self._sock.close(linger=0)

    def close(self) -> None:
        """Stop the thread (which closes the socket); idempotent."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)


def is_loopback(address: str) -> bool:
    """True when ``address`` (a bind address or endpoint) is only reachable from this machine."""
    scheme, sep, rest = address.partition("://")
    if not sep or scheme in ("ipc", "inproc", "mem"):  # mem: peernet's in-process transport
        return True
    host = rest.rpartition(":")[0] if ":" in rest else rest
    host = host.split(";")[-1]  # tcp://source;host:port binds to host
    return bool(_LOOPBACK.fullmatch(host))


def warn_if_exposed(listen: str, who: str, how: str) -> None:
    """Log a warning when ``who`` listens beyond loopback without CURVE; ``how`` says how to turn it on."""
    if not is_loopback(listen):
        log.warning("%s listens on %s without CURVE: traffic is unauthenticated and unencrypted, so anyone who "
                    "can reach it can send to it. %s", who, listen, how)
