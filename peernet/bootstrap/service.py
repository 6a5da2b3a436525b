"""The bootstrap's ZeroMQ ROUTER loop: validate each msgpack request, apply it to the registry, reply."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from peernet.bootstrap.config import BootstrapConfig
from peernet.bootstrap.registry import Refused, Registry, run_fingerprint
from peernet.config import load_run_settings, resolve_topology
from peernet.errors import TransportError

log = logging.getLogger("peernet.bootstrap")

MAX_REQUEST_BYTES = 1 << 20  # requests are a few hundred bytes; libzmq drops a peer that sends more than this
POLL_MS = 100  # how quickly serve_forever notices its stop event
NODE_STATES = ("training", "done", "waiting", "stopped")
_ENDPOINT = re.compile(r"[a-z][a-z0-9+.-]*://\S+")
_TOKEN = re.compile(r"[\w.:+-]+")
_Z85 = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


class BadRequest(Exception):
    """A request that does not follow the protocol; answered with ok=false and counted."""


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise BadRequest(f"expected an integer in [{lo}, {hi}], got {_brief(value)}")
        return value
    return check


def _str(max_len: int, pattern: re.Pattern[str] | None = None) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not 0 < len(value) <= max_len:
            raise BadRequest(f"expected a string of 1 to {max_len} characters, got {_brief(value)}")
        if pattern is not None and not pattern.fullmatch(value):
            raise BadRequest(f"malformed value {_brief(value)}")
        return value
    return check


def _public_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 40 or not set(value) <= _Z85:
        raise BadRequest(f"expected none or a 40-character z85 CURVE key, got {_brief(value)}")
    return value


def _state(value: Any) -> str:
    if value not in NODE_STATES:
        raise BadRequest(f"expected one of {', '.join(NODE_STATES)}, got {_brief(value)}")
    return str(value)


def _metrics(value: Any) -> dict[str, float | int | None]:
    if not isinstance(value, dict) or len(value) > 64:
        raise BadRequest(f"expected a map of at most 64 entries, got {_brief(value)}")
    for key, item in value.items():
        if not isinstance(key, str) or not 0 < len(key) <= 64:
            raise BadRequest(f"metric names must be strings of 1 to 64 characters, got {_brief(key)}")
        ok_int = isinstance(item, int) and not isinstance(item, bool) and abs(item) < 2**63
        if not (item is None or ok_int or isinstance(item, float)):
            raise BadRequest(f"metric {key!r} must be a number or none, got {_brief(item)}")
    return value


def _brief(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


_node_id = _int(0, 2**31 - 1)
_incarnation = _str(64, _TOKEN)
# Per op: field -> (validator, required). Unknown fields are refused, like unknown keys in config files.
SCHEMAS: dict[str, dict[str, tuple[Callable[[Any], Any], bool]]] = {
    "register": {"id": (_node_id, True), "endpoint": (_str(256, _ENDPOINT), True), "public_key": (_public_key, False),
                 "fingerprint": (_str(128), True), "incarnation": (_incarnation, True)},
    "wait_start": {"id": (_node_id, True), "incarnation": (_incarnation, True)},
    "heartbeat": {"id": (_node_id, True), "incarnation": (_incarnation, True), "round": (_int(0, 2**62), True),
                  "state": (_state, True), "metrics": (_metrics, False)},
    "leave": {"id": (_node_id, True), "incarnation": (_incarnation, True)},
    "status": {},
}


def parse_request(frame: bytes) -> tuple[str, dict[str, Any]]:
    """Decode and validate one request frame into (op, fields); raises BadRequest saying what is wrong."""
    try:
        request = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types (ExtraData, ValueError, StackError, ...)
        raise BadRequest(f"not a msgpack message ({type(exc).__name__})") from None
    if not isinstance(request, dict):
        raise BadRequest(f"expected a msgpack map, got {type(request).__name__}")
    op = request.get("op")
    if not isinstance(op, str) or op not in SCHEMAS:
        raise BadRequest(f"unknown op {_brief(op)}; expected one of {', '.join(SCHEMAS)}")
    schema = SCHEMAS[op]
    fields: dict[str, Any] = {}
    for key in request:
        if key != "op" and key not in schema:
            raise BadRequest(f"unknown field {key[:40]!r} for op {op!r}")
    for key, (check, required) in schema.items():
        if key not in request:
            if required:
                raise BadRequest(f"op {op!r} needs field {key!r}")
            continue
        try:
            fields[key] = check(request[key])
        except BadRequest as exc:
            raise BadRequest(f"field {key!r}: {exc}") from None
    return op, fields


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


class BootstrapService:
    """Binds a ROUTER at ``config.listen`` and answers register / wait_start / heartbeat / leave / status.

    Construction loads the run settings and topology, opens the registry and binds; ``endpoint`` is the
    address actually bound (useful with port 0 or '*'). Only the serving thread touches the socket.
    """

    def __init__(self, config: BootstrapConfig, *, fresh: bool = False, curve_secret_key: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        settings = load_run_settings(config.run)
        self.topology = resolve_topology(settings)
        self.fingerprint = run_fingerprint(settings, self.topology)
        self.clock = clock
        if self.topology.n > config.max_nodes:
            log.warning("topology has %d nodes but max_nodes is %d: the run can never start",
                        self.topology.n, config.max_nodes)
        self.registry = Registry(config.registry_path, self.topology, self.fingerprint, node_ttl=config.node_ttl,
                                 max_nodes=config.max_nodes, fresh=fresh)
        self.counters = {"requests": 0, "bad_requests": 0, "rejected": 0}
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.linger = 0
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        if curve_secret_key is not None:
            # Encryption only: without a ZAP handler any client key is accepted; node keys are checked elsewhere.
            self._sock.curve_server = True
            self._sock.curve_secretkey = curve_secret_key.encode()
        try:
            self._sock.bind(config.listen)
        except zmq.ZMQError as exc:
            self._shutdown()
            self.registry.close()
            raise TransportError(f"bootstrap cannot listen on {config.listen}: {exc}") from None
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: set[int] = set()
        self._next_sweep = 0.0

    def serve_forever(self, stop_event: threading.Event | None = None) -> None:
        """Answer requests until ``stop_event`` (or ``close()``) is set."""
        stop = stop_event or self._stop
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        log.info("serving run %s: %d nodes expected, %s", self.fingerprint, self.topology.n,
                 "already started" if self.registry.started else f"{len(self.registry.missing())} still missing")
        while not (stop.is_set() or self._stop.is_set()):
            if poller.poll(POLL_MS):
                # Drain what is queued so a burst of heartbeats does not wait on the poll timeout.
                while True:
                    try:
                        frames = self._sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._serve_one(frames)
            self._sweep()

    def _serve_one(self, frames: list[bytes]) -> None:
        self.counters["requests"] += 1
        ident, rest = frames[:1], frames[1:]
        delimiter = [b""] if rest and rest[0] == b"" else []  # a REQ client puts an empty frame first
        rest = rest[len(delimiter):]
        try:
            if len(rest) != 1:
                raise BadRequest(f"expected one request frame, got {len(rest)}")
            op, fields = parse_request(rest[0])
            reply = self._handle(op, fields)
        except BadRequest as exc:
            self.counters["bad_requests"] += 1
            log.warning("bad request: %s", exc)
            reply = {"ok": False, "reason": f"bad request: {exc}"}
        except Refused as exc:
            self.counters["rejected"] += 1
            reply = {"ok": False, "reason": exc.reason}
        except Exception:  # a registry failure (disk full, ...) must not stop the service
            log.exception("internal error while serving a request")
            reply = {"ok": False, "reason": "internal error in the bootstrap; see its log"}
        try:
            self._sock.send_multipart([*ident, *delimiter, msgpack.packb(reply)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("reply dropped: %s", exc)

    def _handle(self, op: str, f: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        reg = self.registry
        if op == "register":
            was_started = reg.started
            try:
                kind = reg.register(f["id"], f["endpoint"], f.get("public_key"), f["fingerprint"], f["incarnation"],
                                    now)
            except Refused as exc:
                log.warning("rejected registration of node %s from %s: %s", f["id"], f["endpoint"], exc.reason)
                raise
            if kind != "again":
                log.info("node %d registered%s at %s", f["id"], " again (restarted)" if kind == "replaced" else "",
                         f["endpoint"])
            if reg.started and not was_started:
                log.info("run started: all %d nodes registered", self.topology.n)
            return self._start_reply()
        if op == "wait_start":
            reg.wait_start(f["id"], f["incarnation"], now)
            return self._start_reply()
        if op == "heartbeat":
            reg.heartbeat(f["id"], f["incarnation"], f["round"], f["state"], f.get("metrics", {}), now)
            return {"ok": True, "table": reg.table()}
        if op == "leave":
            if reg.leave(f["id"], f["incarnation"], now):
                log.info("node %d left", f["id"])
            return {"ok": True}
        # msgpack has NaN but JSON tools downstream (status --json) do not; 'no value' reads better anyway.
        nodes = [_finite(node) for node in reg.status(now)]
        return {"ok": True, "started": reg.started, "expected": self.topology.n, "fingerprint": self.fingerprint,
                "nodes": nodes, "bad_requests": self.counters["bad_requests"], "rejected": self.counters["rejected"]}

    def _start_reply(self) -> dict[str, Any]:
        if self.registry.started:
            return {"ok": True, "started": True, "table": self.registry.table()}
        missing = self.registry.missing()
        return {"ok": True, "started": False, "missing": len(missing), "expected": self.topology.n}

    def _sweep(self) -> None:
        # Log nodes that went silent, so an operator sees a crash without polling `peernet status`.
        now = self.clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(1.0, self.config.node_ttl / 4)
        nodes = self.registry.status(now)
        live = {node["id"] for node in nodes if node["live"]}
        left = {node["id"] for node in nodes if node["left"]}
        for node_id in sorted(self._live - live - left):
            log.warning("node %d silent for over %gs: no longer live", node_id, self.config.node_ttl)
        self._live = live

    def start_in_thread(self) -> threading.Thread:
        """Serve from a daemon thread (tests, embedding); ``close()`` stops and joins it."""
        self._thread = threading.Thread(target=self.serve_forever, name="peernet-bootstrap", daemon=True)
        self._thread.start()
        return self._thread

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._shutdown()
        self.registry.close()

    def _shutdown(self) -> None:
        self._sock.close(linger=0)
        self._ctx.destroy(linger=0)

    def __enter__(self) -> BootstrapService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
