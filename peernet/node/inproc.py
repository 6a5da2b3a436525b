"""A whole run in one process: the bootstrap and N daemons as threads, the daemons over an in-memory network.

The daemons are the real ones (peernet.node.daemon) with a MemoryTransport on one MemoryHub instead of
ZeroMQ; the bootstrap is the real service, on a loopback port. With ``network="zmq"`` the daemons use their
real ZeroMQ transport on loopback TCP instead (optionally CURVE, with the keys ``peernet local`` makes), so a
test can attack a live node with its own sockets; such nodes cannot be ``kill``ed. Faults are the daemon's own
fault-injecting transport ([faults] in the node options); ``kill`` ends a node as SIGKILL would a process
(no clean checkpoint, no bye, its endpoint gone at once). What only processes show (signals, namespaces,
SSH) stays in the real-process tests; everything else runs here in seconds (docs/design.md, "Layers").
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from peernet.bootstrap.client import BootstrapClient, ClientCurve
from peernet.bootstrap.config import load_bootstrap_config
from peernet.bootstrap.service import BootstrapService
from peernet.config import RunSettings
from peernet.errors import BootstrapUnavailable, ConfigError, LaunchError, NodeKilled, TransportError
from peernet.node.config import LAUNCHER_KEYS, NodeConfig, node_config_from_mapping
from peernet.node.daemon import NodeDaemon
from peernet.node.launcher import LocalCluster
from peernet.node.wiring import Wiring, zmq_transport
from peernet.security.cluster import BOOTSTRAP_KEY, KEYS_DIR, node_key_name
from peernet.security.keys import PUBLIC_SUFFIX, SECRET_SUFFIX
from peernet.transport import CurveKeys, MemoryHub, MemoryTransport, Place, Transport

log = logging.getLogger("peernet.inproc")


def build_node_config(out: Path, state_dir: Path, node_id: int, bootstrap: str, options: Mapping[str, Any], *,
                      source: str | None = None, launcher: Mapping[str, Any] | None = None) -> NodeConfig:
    """A node config for an in-process run: ``mem://<id>``, the run directory's run.toml, ``options`` parsed
    (and checked) as the keys of a node TOML file would be, ``[faults]`` included. ``source`` names where the
    options came from, for error messages; ``launcher`` overrides launcher keys (a ZeroMQ listen address, key
    files)."""
    source = source or f"node {node_id} options"
    reserved = sorted(set(options) & set(LAUNCHER_KEYS))
    if reserved:
        raise ConfigError("set by the in-process run itself; leave it out", file=source, key=reserved[0])
    return node_config_from_mapping({"id": node_id, "run": str(out / "run.toml"), "listen": f"mem://{node_id}",
                                     "bootstrap": bootstrap, "state_dir": str(state_dir), **(launcher or {}),
                                     **options}, source)


class WrappedTransport:
    """A MemoryTransport behind a ``_check()`` run before every call; subclasses decide what it checks (a kill,
    a scheduled crash) and may wait differently in ``recv``."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.node_id = inner.node_id
        self.endpoint = inner.endpoint
        self.stats = inner.stats

    def _check(self) -> None:
        """Raise NodeKilled when this node must be dead by now."""

    def connect(self, peer_id: int, endpoint: str) -> None:
        self._check()
        self.inner.connect(peer_id, endpoint)

    def disconnect(self, peer_id: int) -> None:
        self._check()
        self.inner.disconnect(peer_id)

    def send(self, peer_id: int, frames: Sequence[bytes | memoryview]) -> bool:
        self._check()
        return self.inner.send(peer_id, frames)

    def recv(self, timeout: float, place: Place | None = None) -> tuple[int, list[memoryview]] | None:
        self._check()
        return self.inner.recv(timeout, place)

    def close(self) -> None:
        self.inner.close()


class KillableTransport(WrappedTransport):
    """Killed from another thread: it leaves the hub at once (the neighbours' sends fail, as to a dead
    process) and every later call in the node's own thread raises NodeKilled. ``killed`` is the node's own
    flag, shared with its bootstrap client. Paused, the node's thread stands still at its next network call
    until resumed, as a SIGSTOPped process would (its heartbeats, in their own thread, go on)."""

    def __init__(self, inner: Transport, killed: threading.Event) -> None:
        super().__init__(inner)
        self.killed = killed
        self.running = threading.Event()
        self.running.set()

    def kill(self) -> None:
        self.killed.set()
        self.running.set()
        self.inner.close()

    def _check(self) -> None:
        self.running.wait()
        if self.killed.is_set():
            raise NodeKilled(f"node {self.node_id} was killed")

    def recv(self, timeout: float, place: Place | None = None) -> tuple[int, list[memoryview]] | None:
        try:
            return super().recv(timeout, place)
        except TransportError:
            self._check()  # closed under us by kill(): that is the kill, not a transport failure
            raise


class KillableClient(BootstrapClient):
    """A bootstrap client that stops answering once its node is killed (a dead process sends nothing)."""

    def __init__(self, address: str, killed: threading.Event, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        self.killed = killed

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        if self.killed.is_set():
            raise BootstrapUnavailable("this node was killed")
        return super().request(op, **fields)


@dataclasses.dataclass
class NodeThread:
    """One daemon of the cluster, its thread and how it ended."""

    daemon: NodeDaemon
    thread: threading.Thread
    killed: threading.Event
    ports: dict[str, KillableTransport]  # filled by the transport factory when the daemon builds
    summary: dict[str, Any] | None = None
    error: BaseException | None = None

    @property
    def transport(self) -> KillableTransport | None:
        return self.ports.get("transport")


class InProcessCluster:
    """``start()``, then ``wait()`` (or ``kill``/``restart`` nodes meanwhile); ``stop()`` always, or use ``with``.

    ``node_options`` are node config keys for every node (sub-second deadlines suit the quadratic task);
    ``per_node`` adds or overrides keys for single nodes. The run directory (run.toml, topology.toml,
    bootstrap.toml, ``nodes/nodeN/``) has the layout ``peernet local`` writes, so results tools read it alike.
    """

    def __init__(self, settings: RunSettings, out: str | Path, node_options: dict[str, Any] | None = None, *,
                 per_node: dict[int, dict[str, Any]] | None = None, hwm: int = 4,
                 clock: Callable[[], float] | None = None, network: str = "memory", curve: bool = False) -> None:
        if network not in ("memory", "zmq"):
            raise LaunchError(f"network must be 'memory' or 'zmq', not {network!r}")
        if curve and network != "zmq":
            raise LaunchError("CURVE needs network='zmq': the in-memory network has no handshakes")
        self.network = network
        self.layout = LocalCluster.prepare(settings, out, {}, curve=curve)
        self.out = self.layout.out
        self.settings = settings
        self.topology = self.layout.topology
        self.node_options = dict(node_options or {})
        self.per_node = {i: dict(o) for i, o in (per_node or {}).items()}
        self.hub = MemoryHub()
        self.hwm = hwm
        self.clock = clock
        self.bootstrap: BootstrapService | None = None
        self.bootstrap_address = ""  # kept when the bootstrap is stopped: restarted nodes still try it
        self.nodes: dict[int, NodeThread] = {}

    def state_dir(self, node_id: int) -> Path:
        return self.layout.state_dir(node_id)

    # -- starting --------------------------------------------------------------------------------------
    def start(self) -> None:
        self.start_bootstrap()
        for node_id in self.topology.ids:
            self.start_node(node_id)

    def start_bootstrap(self) -> str:
        config = load_bootstrap_config(self.out / "bootstrap.toml", {"listen": "tcp://127.0.0.1:0"})
        self.bootstrap = BootstrapService(config, fresh=True)
        self.bootstrap.start_in_thread()
        self.bootstrap_address = self.bootstrap.endpoint
        return self.bootstrap_address

    def stop_bootstrap(self) -> None:
        """The bootstrap goes away (as if killed): nothing answers at its address any more."""
        if self.bootstrap is not None:
            self.bootstrap.close()
            self.bootstrap = None

    def node_config(self, node_id: int) -> NodeConfig:
        """The node's config, built from the options exactly as a node TOML file would be parsed."""
        if not self.bootstrap_address:
            raise LaunchError("start the bootstrap before the nodes")
        launcher: dict[str, Any] = {}
        if self.network == "zmq":
            launcher["listen"] = "tcp://127.0.0.1:*"
            if self.layout.curve:
                keys = self.out / KEYS_DIR
                launcher |= {"secret_key": str(keys / f"{node_key_name(node_id)}{SECRET_SUFFIX}"),
                             "bootstrap_public_key_file": str(keys / f"{BOOTSTRAP_KEY}{PUBLIC_SUFFIX}")}
        return build_node_config(self.out, self.state_dir(node_id), node_id, self.bootstrap_address,
                                 {**self.node_options, **self.per_node.get(node_id, {})}, launcher=launcher)

    def start_node(self, node_id: int, *, fresh: bool = True) -> NodeThread:
        """Start (or, with ``fresh=False``, restart from its state directory) one daemon thread."""
        old = self.nodes.get(node_id)
        if old is not None and old.thread.is_alive():
            raise LaunchError(f"node {node_id} is still running")
        if fresh:
            shutil.rmtree(self.state_dir(node_id), ignore_errors=True)
        killed = threading.Event()
        ports: dict[str, KillableTransport] = {}

        def transport(cfg: NodeConfig, max_msg_size: int, curve: CurveKeys | None) -> Transport:
            inner: Transport = (MemoryTransport(cfg.id, self.hub, hwm=self.hwm, max_msg_size=max_msg_size)
                                if self.network == "memory" else zmq_transport(cfg, max_msg_size, curve))
            ports["transport"] = KillableTransport(inner, killed)
            if killed.is_set():  # killed before it built its transport
                ports["transport"].kill()
            return ports["transport"]

        def bootstrap(cfg: NodeConfig, curve: ClientCurve | None) -> BootstrapClient:
            return KillableClient(cfg.bootstrap, killed, timeout=cfg.bootstrap_timeout,
                                  retries=cfg.bootstrap_retries, curve=curve)

        wiring = Wiring(transport=transport, bootstrap=bootstrap,
                        **({} if self.clock is None else {"clock": self.clock}))
        daemon = NodeDaemon(self.node_config(node_id), fresh=fresh, wiring=wiring)
        node = NodeThread(daemon=daemon, thread=threading.Thread(), killed=killed, ports=ports)
        node.thread = threading.Thread(target=self._run, args=(node,), name=f"peernet-node-{node_id}", daemon=True)
        self.nodes[node_id] = node
        node.thread.start()
        return node

    @staticmethod
    def _run(node: NodeThread) -> None:
        try:
            node.summary = node.daemon.run()
        except NodeKilled:
            pass
        except BaseException as exc:  # reported by wait(): a test must see why a node failed
            if node.killed.is_set():
                return  # whatever a killed node was doing when it died is not an error of the run
            node.error = exc
            log.exception("node %d failed", node.daemon.cfg.id)

    # -- faults ----------------------------------------------------------------------------------------
    def kill(self, node_id: int, timeout: float = 30.0) -> None:
        """End a node as SIGKILL would: its endpoint vanishes now, its thread stops at its next network call."""
        if self.network != "memory":
            # Closing a ZeroMQ socket from another thread than its own is not safe; stop_node is.
            raise LaunchError("kill needs network='memory'")
        node = self.nodes[node_id]
        node.killed.set()  # first: a transport built from now on is killed by its factory
        transport = node.transport
        if transport is not None:
            transport.kill()  # not stop_event: that is SIGTERM, a clean exit with a clean checkpoint
        node.thread.join(timeout)
        if node.thread.is_alive():
            raise LaunchError(f"node {node_id} did not stop within {timeout}s of being killed")

    def pause(self, node_id: int) -> None:
        """Hold a node's thread at its next network call (``resume`` lets it go on)."""
        transport = self.nodes[node_id].transport
        if transport is None:
            raise LaunchError(f"node {node_id} has no transport yet")
        transport.running.clear()

    def resume(self, node_id: int) -> None:
        transport = self.nodes[node_id].transport
        if transport is not None:
            transport.running.set()

    # -- waiting and stopping --------------------------------------------------------------------------
    def wait_round(self, node_id: int, round_: int, timeout: float = 60.0) -> None:
        if not self.nodes[node_id].daemon.wait_round(round_, timeout):
            raise LaunchError(f"node {node_id} did not reach round {round_} within {timeout}s "
                              f"(at round {self.nodes[node_id].daemon.round})")

    def wait(self, ids: Sequence[int] | None = None, timeout: float = 120.0) -> dict[int, dict[str, Any]]:
        """Join the given nodes (default: all); their summaries. LaunchError if one failed or ran out of time."""
        chosen = list(self.nodes) if ids is None else list(ids)
        for node_id in chosen:
            node = self.nodes[node_id]
            node.thread.join(timeout)
            if node.thread.is_alive():
                raise LaunchError(f"node {node_id} did not finish within {timeout}s (at round {node.daemon.round})")
            if node.error is not None:
                raise LaunchError(f"node {node_id} failed: {node.error!r}") from node.error
        return {i: self.nodes[i].summary or {} for i in chosen}

    def stop(self) -> None:
        """Tell every daemon to stop, join them, close the bootstrap; safe to call twice."""
        for node in self.nodes.values():
            node.daemon.stop_event.set()
            if node.transport is not None:
                node.transport.running.set()  # a paused node must get to see the stop
        for node in self.nodes.values():
            node.thread.join(30.0)
        self.stop_bootstrap()

    def __enter__(self) -> InProcessCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
