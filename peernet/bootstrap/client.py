"""Node-side bootstrap client: one DEALER, Lazy Pirate retries (close, reopen, resend), msgpack maps."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import msgpack
import zmq
import zmq.utils.monitor

from peernet.errors import BootstrapRejected, BootstrapUnavailable, WireError

MAX_REPLY_BYTES = 64 << 20  # a status or table for max_nodes nodes is well below this


class ClientCurve(NamedTuple):
    """CURVE keys (z85 strings) for talking to a bootstrap that runs with a secret key."""

    server_key: str
    public_key: str
    secret_key: str


def new_incarnation() -> str:
    """A random token naming one process start of a node, so the bootstrap tells a restart from a duplicate."""
    return secrets.token_hex(8)


class BootstrapClient:
    """Talks to the bootstrap at ``address``; every call waits ``timeout`` seconds per try, ``retries`` tries.

    Not thread-safe (ZeroMQ sockets are not): use one client per thread.
    """

    def __init__(self, address: str, *, timeout: float = 2.0, retries: int = 3, curve: ClientCurve | None = None
                 ) -> None:
        if timeout <= 0 or retries < 1:
            raise ValueError(f"need timeout > 0 and retries >= 1, got {timeout} and {retries}")
        self.address = address
        self.timeout = timeout
        self.retries = retries
        self.curve = curve
        self._ctx = zmq.Context()
        self._sock: zmq.Socket[bytes] | None = None

    def _open(self) -> zmq.Socket[bytes]:
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES)
        if self.curve is not None:
            sock.curve_serverkey = self.curve.server_key.encode()
            sock.curve_publickey = self.curve.public_key.encode()
            sock.curve_secretkey = self.curve.secret_key.encode()
        try:
            sock.connect(self.address)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise BootstrapUnavailable(f"cannot connect to bootstrap at {self.address}: {exc}") from None
        return sock

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return the reply map (ok may be false); raises BootstrapUnavailable."""
        frame = msgpack.packb({"op": op, **fields})
        for _ in range(self.retries):
            if self._sock is None:
                self._sock = self._open()
            try:
                self._sock.send(frame, zmq.NOBLOCK)
                if self._sock.poll(int(self.timeout * 1000), zmq.POLLIN):
                    return self._decode(self._sock.recv(zmq.NOBLOCK))
            except zmq.ZMQError:
                pass
            # Lazy Pirate: the socket may hold a lost request or a late reply, so start over with a fresh one.
            self._drop_socket()
        raise BootstrapUnavailable(
            f"bootstrap at {self.address} did not answer after {self.retries} tries of {self.timeout}s")

    def _decode(self, data: bytes) -> dict[str, Any]:
        try:
            reply = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several exception types
            raise WireError(f"bootstrap at {self.address} sent a reply that is not msgpack ({exc})") from None
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            raise WireError(f"bootstrap at {self.address} sent a malformed reply: {str(reply)[:80]}")
        table = reply.get("table")
        if isinstance(table, dict):
            reply["table"] = _table(table, self.address)
        return reply

    def register(self, node_id: int, endpoint: str, *, fingerprint: str, incarnation: str,
                 public_key: str | None = None, replaces: str | None = None) -> dict[str, Any]:
        """Register; returns {"ok", "started", "table" (if started)}; raises BootstrapRejected if refused."""
        fields: dict[str, Any] = {"id": node_id, "endpoint": endpoint, "public_key": public_key,
                                  "fingerprint": fingerprint, "incarnation": incarnation}
        if replaces is not None:
            fields["replaces"] = replaces
        reply = self.request("register", **fields)
        if not reply["ok"]:
            raise BootstrapRejected(str(reply.get("reason", "no reason given")))
        return reply

    def loading(self, node_id: int, *, fingerprint: str, incarnation: str, public_key: str | None = None,
                replaces: str | None = None) -> bool:
        """Say this node is up and loading its data (shown by `peernet status`; not a registration: the run does
        not start on it). False if the bootstrap predates the op; raises BootstrapRejected if it refuses."""
        fields: dict[str, Any] = {"id": node_id, "public_key": public_key, "fingerprint": fingerprint,
                                  "incarnation": incarnation}
        if replaces is not None:
            fields["replaces"] = replaces
        reply = self.request("loading", **fields)
        if reply["ok"]:
            return True
        reason = str(reply.get("reason", "no reason given"))
        if reason.startswith("bad request: unknown op"):
            return False
        raise BootstrapRejected(reason)

    def wait_start(self, node_id: int, incarnation: str, *, timeout: float, poll: float = 0.2,
                   should_stop: Callable[[], bool] | None = None) -> dict[int, dict[str, Any]] | None:
        """Poll until every node registered; returns the table {id: {endpoint, public_key}}.

        A bootstrap that stops answering for a while is tolerated until ``timeout`` runs out. Returns None
        as soon as ``should_stop()`` is true (a node told to stop while it waits exits cleanly).
        """
        deadline = time.monotonic() + timeout
        missing: int | None = None
        while True:
            if should_stop is not None and should_stop():
                return None
            try:
                reply = self.request("wait_start", id=node_id, incarnation=incarnation)
            except BootstrapUnavailable:
                reply = None
            if reply is not None:
                if not reply["ok"]:
                    raise BootstrapRejected(str(reply.get("reason", "no reason given")))
                if reply.get("started"):
                    table = reply.get("table")
                    if not isinstance(table, dict):
                        raise WireError(f"bootstrap at {self.address} reported a start without a node table")
                    return table
                if isinstance(reply.get("missing"), int):
                    missing = reply["missing"]
            left = deadline - time.monotonic()
            if left <= 0:
                detail = f"{missing} nodes still missing" if missing is not None else "no answer"
                raise BootstrapUnavailable(f"run did not start within {timeout}s at bootstrap {self.address}: "
                                           f"{detail}")
            time.sleep(min(poll, left))

    def heartbeat(self, node_id: int, incarnation: str, *, round: int, state: str,
                  metrics: dict[str, float | int | None] | None = None) -> dict[str, Any]:
        """Report progress; returns the reply: {"ok": True, "table": ...} or {"ok": False, "reason": ...}.

        ok=false means this process is no longer the registered one (left, replaced, bootstrap wiped):
        the node should register again or stop.
        """
        return self.request("heartbeat", id=node_id, incarnation=incarnation, round=round, state=state,
                            metrics=metrics or {})

    def leave(self, node_id: int, incarnation: str) -> bool:
        """Tell the bootstrap this node is done; returns whether it accepted."""
        return bool(self.request("leave", id=node_id, incarnation=incarnation)["ok"])

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def close(self) -> None:
        self._drop_socket()
        self._ctx.destroy(linger=0)

    def __enter__(self) -> BootstrapClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def diagnose(address: str, curve: ClientCurve | None, timeout: float) -> str:
    """Why a bootstrap at ``address`` did not answer, as far as ZeroMQ's socket events tell within ``timeout`` s:
    nothing accepts connections, the CURVE handshake was refused (and which way), or it connected and stayed
    silent. For the message a client shows after BootstrapUnavailable."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if curve is not None:
        sock.curve_serverkey, sock.curve_publickey = curve.server_key.encode(), curve.public_key.encode()
        sock.curve_secretkey = curve.secret_key.encode()
    monitor = sock.get_monitor_socket()
    seen: dict[int, int] = {}
    try:
        sock.connect(address)
        deadline = time.monotonic() + timeout
        # The handshake's outcome is the last word; until then keep reading what the connection did.
        while not seen.keys() & _HANDSHAKE_EVENTS and monitor.poll(max(1, int(1000 * (deadline - time.monotonic())))):
            event = zmq.utils.monitor.recv_monitor_message(monitor)
            seen.setdefault(int(event["event"]), int(event["value"]))
    except zmq.ZMQError as exc:
        return f"cannot connect: {exc}"
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
        ctx.destroy(linger=0)
    return _reason(seen, curve is not None)


_HANDSHAKE_EVENTS = {zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                     zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL}
_KEYS_HINT = "--secret-key and --server-key-file, or --run-dir DIR for a `peernet local` run"


def _reason(seen: dict[int, int], with_curve: bool) -> str:
    # ZeroMQ reports a refused handshake as PROTOCOL (mechanism mismatch), AUTH or NO_DETAIL depending on timing:
    # what we sent tells more. A peer without CURVE never refuses a client without it.
    if seen.keys() & _HANDSHAKE_EVENTS - {zmq.EVENT_HANDSHAKE_SUCCEEDED}:
        if not with_curve:
            return f"it requires CURVE keys (the handshake was refused): pass {_KEYS_HINT}"
        return ("the CURVE handshake was refused: our public key is not among its client_keys_files, the server key "
                "(--server-key-file) is not this bootstrap's, or it does not use CURVE")
    if zmq.EVENT_HANDSHAKE_SUCCEEDED in seen:
        return "it accepted the connection but sent no reply (overloaded, or not a peernet bootstrap)"
    if zmq.EVENT_CONNECTED in seen:
        return f"a connection was made but no handshake finished: the bootstrap is stuck or requires {_KEYS_HINT}"
    return "nothing accepts connections there: the bootstrap is down or the address is wrong"


def _table(raw: dict[Any, Any], address: str) -> dict[int, dict[str, Any]]:
    table: dict[int, dict[str, Any]] = {}
    for key, entry in raw.items():
        if not isinstance(key, int) or isinstance(key, bool) or not isinstance(entry, dict):
            raise WireError(f"bootstrap at {address} sent a malformed node table entry {key!r}")
        if not isinstance(entry.get("endpoint"), str) or not isinstance(entry.get("public_key"), str | None):
            raise WireError(f"bootstrap at {address} sent a malformed node table entry for node {key}")
        table[key] = {"endpoint": entry["endpoint"], "public_key": entry.get("public_key")}
    return table
