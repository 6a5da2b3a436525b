"""The bootstrap's ZeroMQ ROUTER loop: validate each msgpack request, apply it to the registry, reply."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import zmq

from peernet.bootstrap.config import BootstrapConfig
from peernet.bootstrap.monitor import BootstrapMonitor
from peernet.bootstrap.protocol import NODE_STATES as NODE_STATES
from peernet.bootstrap.protocol import SCHEMAS as SCHEMAS
from peernet.bootstrap.protocol import BadRequest, parse_request
from peernet.bootstrap.registry import Refused, Registry
from peernet.config import load_run_settings, resolve_topology, run_fingerprint
from peernet.endpoint_file import write_endpoint
from peernet.errors import ConfigError, TransportError
from peernet.ratelimit import RateLimitedLog
from peernet.security.cluster import key_owners
from peernet.security.keys import load_public_key, load_secret_key
from peernet.security.zap import ZapHandler, user_id_of, warn_if_exposed
from peernet.transport.handshakes import HandshakeMonitor, count_handshakes
from peernet.transport.trim import hostile_message_dropped, trim_if_due
from peernet.transport.zmq_transport import recv_bounded

log = logging.getLogger("peernet.bootstrap")

MAX_REQUEST_BYTES = 1 << 20  # requests are a few hundred bytes; libzmq drops a peer that sends more than this
MAX_REQUEST_FRAMES = 4  # identity, REQ's empty delimiter, the request map (and one more, answered as malformed)
POLL_MS = 100  # how quickly serve_forever notices its stop event
CLIENT_USER = "client"  # the User-Id of status clients (client_keys_files): they may only ask for status
#: Counters in the status reply (``peernet status --json``): refusals, and handshakes that failed or were refused.
STATUS_COUNTERS = ("bad_requests", "rejected", "refused_handshakes", "failed_handshakes")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


class BootstrapService:
    """Binds a ROUTER at ``config.listen`` and answers loading / register / wait_start / heartbeat / leave / status.

    Construction loads the run settings and topology, opens the registry and binds; ``endpoint`` is the
    address actually bound (useful with port 0 or '*'). Only the serving thread touches the socket.
    """

    def __init__(self, config: BootstrapConfig, *, fresh: bool = False, curve_secret_key: str | None = None,
                 client_keys: Sequence[str] = (), clock: Callable[[], float] = time.time) -> None:
        self.config = config
        settings = load_run_settings(config.run)
        self.topology = resolve_topology(settings)
        self.fingerprint = run_fingerprint(settings, self.topology)
        self.clock = clock
        # Keys first: a bad key file is a ConfigError before anything is opened or bound.
        secret = curve_secret_key.encode() if curve_secret_key is not None else None
        if secret is None and config.secret_key is not None:
            secret = load_secret_key(config.secret_key)[1]
        clients = [k.encode() for k in client_keys] + [load_public_key(f) for f in config.client_keys_files]
        allowed = None if secret is None else self._allowlist(clients)
        if self.topology.n > config.max_nodes:
            log.warning("topology has %d nodes but max_nodes is %d: the run can never start",
                        self.topology.n, config.max_nodes)
        self.registry = Registry(config.registry_path, self.topology, self.fingerprint, node_ttl=config.node_ttl,
                                 max_nodes=config.max_nodes, fresh=fresh)
        self.counters = {"requests": 0, "bad_requests": 0, "rejected": 0, "refused_handshakes": 0,
                         "failed_handshakes": 0}
        self._warn = RateLimitedLog(log, every=10.0)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.linger = 0
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        self._zap: ZapHandler | None = None
        self._handshakes: HandshakeMonitor | None = None
        try:
            self._handshakes = HandshakeMonitor(self._ctx, self._sock, "bootstrap")  # before the bind: all counted
            if allowed is not None and secret is not None:
                self._zap = ZapHandler(self._ctx, allowed, name="bootstrap")
                self._sock.curve_server = True
                self._sock.curve_secretkey = secret
            else:
                warn_if_exposed(config.listen, "the bootstrap", "Create keys with `peernet keygen --cluster DIR` "
                                "and set secret_key and client_keys_files in bootstrap.toml (docs/bootstrap.md).")
            self._sock.bind(config.listen)
        except (zmq.ZMQError, TransportError) as exc:
            self._shutdown()
            self.registry.close()
            raise TransportError(f"bootstrap cannot listen on {config.listen}: {exc}") from None
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        write_endpoint(config.state_dir, self.endpoint)  # the registry opened, so the directory exists
        self.monitor: BootstrapMonitor | None = None
        if config.metrics_listen is not None:
            try:
                self.monitor = BootstrapMonitor(config.metrics_listen, config.state_dir, self.counters,
                                                self.topology.n)
            except TransportError:
                self._shutdown()
                self.registry.close()
                raise
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: set[int] = set()
        self._next_sweep = 0.0

    def _allowlist(self, clients: list[bytes]) -> dict[bytes, str]:
        """The topology's node keys (User-Id: the node id) plus the client keys (User-Id: ``client``)."""
        unkeyed = [spec.id for spec in self.topology.nodes if spec.public_key is None]
        if unkeyed:
            raise ConfigError(f"the bootstrap runs CURVE but the topology has no public key for node(s) "
                              f"{unkeyed[:10]}: they could never connect", key="secret_key")
        owners = key_owners(self.topology)
        allowed = {key: str(node) for key, node in owners.items()}
        for key in clients:
            if key in owners:
                raise ConfigError(f"client key {key.decode()[:8]}... is node {owners[key]}'s key: give status "
                                  "clients their own pair (keys/operator.key)", key="client_keys_files")
            allowed[key] = CLIENT_USER
        return allowed

    @property
    def curve(self) -> bool:
        return self._zap is not None

    def serve_forever(self, stop_event: threading.Event | None = None) -> None:
        """Answer requests until ``stop_event`` (or ``close()``) is set."""
        stop = stop_event or self._stop
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        if self._handshakes is not None:
            poller.register(self._handshakes.socket, zmq.POLLIN)
        log.info("serving run %s: %d nodes expected, %s; %s", self.fingerprint, self.topology.n,
                 "already started" if self.registry.started else f"{len(self.registry.missing())} still missing",
                 f"CURVE, {len(self._zap.allowed)} keys allowed" if self._zap is not None else "no CURVE")
        while not (stop.is_set() or self._stop.is_set()):
            ready = dict(poller.poll(POLL_MS))
            count_handshakes(self.counters, self._zap, self._handshakes)
            if self._sock in ready:
                # Drain what is queued so a burst of heartbeats does not wait on the poll timeout.
                while True:
                    try:
                        # A request is an identity, maybe an empty delimiter, and one map: a few frames at most.
                        parts = recv_bounded(self._sock, MAX_REQUEST_FRAMES, MAX_REQUEST_BYTES)
                    except zmq.Again:
                        break
                    if parts is None:  # read and thrown away frame by frame; nobody to answer
                        hostile_message_dropped()
                        self.counters["requests"] += 1
                        self.counters["bad_requests"] += 1
                        self._warn.warning("bad-request", "bad request: too many frames or bytes (%d so far)",
                                           self.counters["bad_requests"])
                        continue
                    user = user_id_of(parts[0]) if self._zap is not None else None
                    self._serve_one([p.bytes for p in parts], user)
            self._sweep()
            trim_if_due()  # after a hostile request, in a bootstrap process (peernet.transport.trim)
            self._warn.flush()  # "N suppressed" once their interval passed, even if no new warning comes

    def _serve_one(self, frames: list[bytes], user: str | None = None) -> None:
        """Answer one request; ``user`` is the connection's CURVE User-Id (None without CURVE)."""
        self.counters["requests"] += 1
        ident, rest = frames[:1], frames[1:]
        delimiter = [b""] if rest and rest[0] == b"" else []  # a REQ client puts an empty frame first
        rest = rest[len(delimiter):]
        try:
            if len(rest) != 1:
                raise BadRequest(f"expected one request frame, got {len(rest)}")
            op, fields = parse_request(rest[0])
            if self._zap is not None and op != "status" and user != str(fields["id"]):
                # Nobody speaks for another node: its key decides which id a connection may use.
                who = "a status client" if user == CLIENT_USER else f"node {user}"
                raise Refused(f"this connection is authenticated as {who}, not as node {fields['id']}")
            reply = self._handle(op, fields)
        except BadRequest as exc:
            self.counters["bad_requests"] += 1
            # Rate-limited: anyone who can connect can send garbage as fast as the socket takes it.
            self._warn.warning("bad-request", "bad request: %s (%d so far)", exc, self.counters["bad_requests"])
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
                                    now, replaces=f.get("replaces"))
            except Refused as exc:
                self._warn.warning("rejected", "rejected registration of node %s from %s: %s", f["id"], f["endpoint"],
                                   exc.reason)
                raise
            if kind != "again":
                log.info("node %d registered%s at %s", f["id"], " again (restarted)" if kind == "replaced" else "",
                         f["endpoint"])
            if reg.started and not was_started:
                log.info("run started: all %d nodes registered", self.topology.n)
            return self._start_reply()
        if op == "loading":
            kind = reg.loading(f["id"], f.get("public_key"), f["fingerprint"], f["incarnation"], now,
                               replaces=f.get("replaces"))
            if kind != "again":
                log.info("node %d is loading its data%s", f["id"], " (restarted)" if kind == "replaced" else "")
            return {"ok": True}
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
                "nodes": nodes, **{k: self.counters[k] for k in STATUS_COUNTERS}}

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
        if self.monitor is not None:
            self.monitor.swept(nodes, self.registry.started)

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
        if self.monitor is not None:
            self.monitor.close()
        self._warn.flush(force=True)

    def _shutdown(self) -> None:
        if self._handshakes is not None:
            self._handshakes.close()
        self._sock.close(linger=0)
        if self._zap is not None:
            self._zap.close()  # its thread closes its own socket, before the context goes
        self._ctx.destroy(linger=0)

    def __enter__(self) -> BootstrapService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
