"""``peernet simulate --mode protocol``: N real daemons in one process, scheduled deterministically.

Each node is the daemon itself (peernet.node.daemon: exchange, edge bookkeeping, round policy, rejoin,
checkpoints, the fault-injecting transport), over the in-memory transport, with an in-memory rendezvous
instead of the bootstrap service and a virtual clock (peernet.sim.baton) instead of time. So fault scenarios
and churn (nodes that crash at a given round) are studied without processes or sockets, and the same seed
gives the same run, message for message. It is much slower per round than the vectorized simulator (every
message is encoded, validated and decoded): use it for protocol questions, the vectorized modes for
optimisation ones.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from peernet.bootstrap.client import BootstrapClient, ClientCurve
from peernet.config import RunSettings, total_rounds
from peernet.errors import NodeKilled, SimulationError
from peernet.metrics.progress import Progress
from peernet.node.config import NodeConfig
from peernet.node.daemon import NodeDaemon
from peernet.node.inproc import WrappedTransport, build_node_config
from peernet.node.launcher import LocalCluster
from peernet.node.results import merge_run
from peernet.node.wiring import Wiring
from peernet.sim.baton import Baton
from peernet.tasks import rounds_per_epoch
from peernet.transport import CurveKeys, MemoryHub, MemoryTransport, Place, Transport

log = logging.getLogger("peernet.sim")

#: Node options of protocol mode unless the caller sets them: deadlines in virtual seconds (computation takes
#: none, so only lost or late messages ever wait), no periodic checkpoints (a crash here is for good), only
#: errors logged (N daemons' warnings would bury the summary, which counts exclusions, drops and catch-ups).
DEFAULTS: dict[str, Any] = {"deadline_floor": 1.0, "deadline_ceiling": 5.0, "checkpoint_every": 0,
                            "heartbeat_every": 3600.0, "log_level": "error"}


class ScheduledTransport(WrappedTransport):
    """A MemoryTransport whose waits give the baton away, and which kills its node after ``die_after`` rounds."""

    def __init__(self, inner: MemoryTransport, baton: Baton, progress: Callable[[], int],
                 die_after: int | None = None) -> None:
        super().__init__(inner)
        self.memory = inner  # typed as what it is: the waits ask it whether anything is pending
        self.baton = baton
        self.progress = progress
        self.die_after = die_after

    def _check(self) -> None:
        if self.die_after is not None and self.progress() >= self.die_after:
            self.inner.close()  # gone at once for its neighbours, as a crashed process is
            raise NodeKilled(f"node {self.node_id} crashed after round {self.die_after} (scenario)")

    def recv(self, timeout: float, place: Place | None = None) -> tuple[int, list[memoryview]] | None:
        self._check()
        got = self.inner.recv(0.0, place)
        if got is not None:
            return got
        # Nothing to read: hand the baton on, even for a zero timeout. Computation takes no virtual time, so a
        # node that awaits nobody (every neighbour excluded) and only peeks at its socket would otherwise run
        # round after round alone while the others never get a turn.
        self.baton.wait(self.node_id, max(timeout, 0.0), self.memory.pending)
        self._check()
        return self.inner.recv(0.0, place)


class Rendezvous(BootstrapClient):
    """The bootstrap's part, in memory: every node's endpoint is ``mem://<id>``, known before anyone starts."""

    def __init__(self, ids: Sequence[int]) -> None:
        super().__init__("mem://bootstrap")
        self.table = {i: {"endpoint": f"mem://{i}", "public_key": None} for i in ids}

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        return {"ok": True, "started": True, "table": self.table}


def _node_thread(baton: Baton, node_id: int, daemon: NodeDaemon, ends: dict[int, Any]) -> None:
    baton.enter(node_id)
    try:
        ends[node_id] = daemon.run()
    except NodeKilled:
        ends[node_id] = None
    except BaseException as exc:  # re-raised by run_protocol
        ends[node_id] = exc
    finally:
        baton.leave(node_id)


def run_protocol(settings: RunSettings, out_dir: str | Path, *, node_options: Mapping[str, Any] | None = None,
                 crashes: Mapping[int, int] | None = None, progress: bool = True,
                 options_source: str | None = None) -> dict[str, Any]:
    """Run the whole cluster; ``crashes`` maps node id -> the round after which it dies for good.

    Returns the merged summary (the keys of ``peernet simulate --json``) plus the protocol's own counters.
    """
    start = time.perf_counter()
    layout = LocalCluster.prepare(settings, out_dir, {}, curve=False)
    ids = list(layout.topology.ids)
    crashes = dict(crashes or {})
    unknown = sorted(set(crashes) - set(ids))
    if unknown:
        raise SimulationError(f"--crash names nodes {unknown} that are not in the topology (ids 0..{len(ids) - 1})")
    options = {**DEFAULTS, **(node_options or {})}
    baton, hub, rendezvous = Baton(ids), MemoryHub(), Rendezvous(ids)
    daemons: dict[int, NodeDaemon] = {}
    threads: list[threading.Thread] = []
    ends: dict[int, Any] = {}
    for i in ids:
        cfg = build_node_config(layout.out, layout.state_dir(i), i, "mem://bootstrap", options, source=options_source)
        progress_of: Callable[[], int] = functools.partial(_round_of, daemons, i)
        daemons[i] = daemon = NodeDaemon(cfg, fresh=True, wiring=_wiring(baton, hub, rendezvous, crashes.get(i),
                                                                         progress_of))
        threads.append(threading.Thread(target=_node_thread, args=(baton, i, daemon, ends), daemon=True,
                                        name=f"peernet-protocol-{i}"))
    node_log = logging.getLogger("peernet.node")
    level = node_log.level
    node_log.setLevel(str(options["log_level"]).upper())
    rounds = settings.rounds if settings.rounds is not None else total_rounds(
        settings, rounds_per_epoch(settings, len(ids)))
    bar = Progress(rounds, f"protocol {len(ids)} nodes", enabled=progress, min_interval=1.0)
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(1.0)
                done = [d.round for d in daemons.values()]
                bar.update(min(done), slowest=min(done), fastest=max(done))
    finally:
        bar.close()
        node_log.setLevel(level)
    failed = {i: e for i, e in ends.items() if isinstance(e, BaseException)}
    if failed:
        node, exc = next(iter(sorted(failed.items())))
        raise SimulationError(f"protocol simulation: node {node} failed: {exc!r}") from exc
    survivors = [i for i in ids if ends.get(i) is not None]
    summary = merge_run(settings, layout.topology, {i: layout.state_dir(i) for i in survivors},
                        time.perf_counter() - start)
    summary.update({"mode": "protocol", "crashed": sorted(crashes), "virtual_seconds": baton.now(),
                    "survivors": survivors})
    return summary


def _round_of(daemons: Mapping[int, NodeDaemon], node_id: int) -> int:
    return daemons[node_id].round


def _wiring(baton: Baton, hub: MemoryHub, rendezvous: Rendezvous, die_after: int | None,
            progress: Callable[[], int]) -> Wiring:
    def transport(cfg: NodeConfig, max_msg_size: int, curve: CurveKeys | None) -> Transport:
        return ScheduledTransport(MemoryTransport(cfg.id, hub, max_msg_size=max_msg_size), baton, progress,
                                  die_after)

    def bootstrap(cfg: NodeConfig, curve: ClientCurve | None) -> BootstrapClient:
        return rendezvous

    return Wiring(transport=transport, bootstrap=bootstrap, clock=baton.now)
