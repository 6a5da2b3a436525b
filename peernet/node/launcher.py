"""``peernet local``: a bootstrap and N node daemons as separate OS processes on 127.0.0.1.

The launcher writes a complete, self-contained run directory (run settings, topology, bootstrap and
node configs), starts real processes that talk over real sockets on random free ports, shows one
combined progress line from the nodes' metrics files, and merges the results at the end. Every process
it starts gets SIGTERM from the kernel when the launcher dies, however it dies (peernet/procs.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from peernet.bootstrap.client import ClientCurve
from peernet.config import RunSettings, resolve_topology, total_rounds, tracker_start
from peernet.core.topology import Topology
from peernet.endpoint_file import clear_endpoint, read_endpoint
from peernet.errors import LaunchError
from peernet.interrupts import deferred_signals
from peernet.metrics.jsonl import read_jsonl
from peernet.metrics.progress import Progress
from peernet.node.failures import describe_failures
from peernet.node.resume import resumable_settings
from peernet.procs import Reaper, die_with_parent
from peernet.rundir import SETTINGS_NAME, run_record
from peernet.security.cluster import BOOTSTRAP_KEY, KEYS_DIR, OPERATOR_KEY, node_key_name
from peernet.security.keys import PUBLIC_SUFFIX, SECRET_SUFFIX, ensure_keypairs, load_public_key, load_secret_key
from peernet.tasks import rounds_per_epoch
from peernet.topology_files import save_topology


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table, e.g. one of [faults]'s partitions
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_toml(path: Path, data: dict[str, Any]) -> None:
    """Flat keys first, then one ``[table]`` per dict value (e.g. a node's ``[faults]``)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if v is not None and not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]", *(f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None)]
    path.write_text("\n".join(lines) + "\n")


@dataclasses.dataclass
class LocalCluster:
    """Run directory layout and the processes of one local run."""

    out: Path
    settings: RunSettings
    topology: Topology
    node_options: dict[str, Any]
    curve: bool = True
    bootstrap: subprocess.Popen[bytes] | None = None
    nodes: dict[int, subprocess.Popen[bytes]] = dataclasses.field(default_factory=dict)
    address: str = ""
    #: Per process ("bootstrap" or a node id): a command prefix (e.g. ``ip netns exec NS``) and, for nodes, a
    #: listen endpoint instead of a random loopback port. Set by the chaos harness's network lab.
    prefix: dict[int | str, list[str]] = dataclasses.field(default_factory=dict)
    listen: dict[int, str] = dataclasses.field(default_factory=dict)
    #: Told of every process started, so that they end even if this launcher is SIGKILLed (set by the commands).
    reaper: Reaper | None = None
    #: Node config keys for single nodes, over ``node_options`` (``local --devices``, ``--metrics-port``).
    per_node: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: ``start()`` continues the run in ``out`` from the nodes' checkpoints (``reopen``, ``local --resume``).
    resuming: bool = False

    @classmethod
    def prepare(cls, settings: RunSettings, out: str | Path, node_options: dict[str, Any] | None = None, *,
                curve: bool = True) -> LocalCluster:
        """Write the run directory: run.toml, topology.toml, bootstrap.toml and settings.json (the resolved
        settings, peernet/rundir.py). With ``curve`` (the default) every connection is CURVE: key pairs for
        the nodes, the bootstrap and an operator go to ``out/keys/`` (kept if already there), the topology
        carries the public keys and the configs name the key files. Without it the topology has no keys.
        The commands claim ``out`` first (a lock, and no earlier run's files); this writes into it as it is.
        """
        out = Path(out)
        # Before creating anything, so a bad topology leaves no trace. Its keys are not read: the run makes its own.
        topology = resolve_topology(settings, key_files=False)
        if settings.tracker_init == "average":  # the settings daemons cannot run (the exact start, no rounds left)
            tracker_start(settings, total_rounds(settings, rounds_per_epoch(settings, topology.n)), gossip_only=True)
        out.mkdir(parents=True, exist_ok=True)
        boot: dict[str, Any] = {"listen": "tcp://127.0.0.1:*", "run": "run.toml", "state_dir": "bootstrap"}
        if curve:
            names = [node_key_name(i) for i in topology.ids] + [BOOTSTRAP_KEY, OPERATOR_KEY]
            public = ensure_keypairs(out / KEYS_DIR, names)
            topology = topology.with_keys({i: public[node_key_name(i)].decode() for i in topology.ids})
            boot |= {"secret_key": f"{KEYS_DIR}/{BOOTSTRAP_KEY}{SECRET_SUFFIX}",
                     "client_keys_files": [f"{KEYS_DIR}/{OPERATOR_KEY}{PUBLIC_SUFFIX}"]}
        else:
            topology = topology.without_keys()
        save_topology(topology, out / "topology.toml")
        run = dataclasses.asdict(settings)
        run["topology"] = "topology.toml"
        run["nodes"] = topology.n
        if run["data_dir"] is not None:
            run["data_dir"] = str(Path(run["data_dir"]).resolve())
        write_toml(out / "run.toml", run)
        write_toml(out / "bootstrap.toml", boot)
        (out / SETTINGS_NAME).write_text(json.dumps(run_record(settings, topology.n), indent=2) + "\n")
        return cls(out=out, settings=settings, topology=topology, node_options=dict(node_options or {}), curve=curve)

    @classmethod
    def reopen(cls, out: str | Path, node_options: dict[str, Any] | None = None) -> LocalCluster:
        """The cluster of a run directory that ``prepare`` wrote, to continue it (``resuming``): its run.toml,
        topology and keys as they are (rewritten, they could change the run's fingerprint), CURVE if the
        topology has keys. RunDirError if ``out`` is not such a directory or its run finished."""
        out = Path(out)
        settings = resumable_settings(out)
        topology = resolve_topology(settings)
        curve = all(spec.public_key is not None for spec in topology.nodes)
        return cls(out=out, settings=settings, topology=topology, node_options=dict(node_options or {}), curve=curve,
                   resuming=True)

    def client_curve(self) -> ClientCurve | None:
        """The operator's keys for a BootstrapClient talking to this cluster's bootstrap (None without CURVE)."""
        if not self.curve:
            return None
        public, secret = load_secret_key(self.out / KEYS_DIR / f"{OPERATOR_KEY}{SECRET_SUFFIX}")
        server = load_public_key(self.out / KEYS_DIR / f"{BOOTSTRAP_KEY}{PUBLIC_SUFFIX}")
        return ClientCurve(server.decode(), public.decode(), secret.decode())

    def node_config_path(self, node_id: int) -> Path:
        return self.out / f"node{node_id}.toml"

    def state_dir(self, node_id: int) -> Path:
        return self.out / "nodes" / f"node{node_id}"

    def start_bootstrap(self, timeout: float = 60.0, *, restart: bool = False) -> str:
        """Start the bootstrap (``restart``: keep its registry, as after a crash) and return its address."""
        log_path = self.out / "bootstrap.log"
        log = log_path.open("ab" if restart or self.resuming else "wb")
        clear_endpoint(self.out / "bootstrap")  # a previous bootstrap's: the new one writes its own once bound
        # A process group of its own: Ctrl-C or a hang-up of the terminal reaches the launcher and the nodes, and
        # stop() ends the bootstrap only after the nodes, whose last heartbeat would otherwise retry against it.
        # The nodes' log level (a node option, from --log-level) is the bootstrap's too.
        level = self.node_options.get("log_level")
        self.bootstrap = self._spawn([*self.prefix.get("bootstrap", []), sys.executable, "-m", "peernet",
                                      "bootstrap", "--config", str(self.out / "bootstrap.toml"),
                                      *([] if restart else ["--fresh"]), *(["--log-level", level] if level else [])],
                                     log, "bootstrap", own_group=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            address = read_endpoint(self.out / "bootstrap")
            if address is not None:
                self.address = address
                return self.address
            if self.bootstrap.poll() is not None:
                raise LaunchError(describe_failures({"the bootstrap": (self.bootstrap.returncode, log_path)}))
            time.sleep(0.05)
        raise LaunchError(f"bootstrap did not report its address within {timeout}s")

    def start_node(self, node_id: int, *, fresh: bool = True) -> subprocess.Popen[bytes]:
        cfg = {"id": node_id, "run": "run.toml", "listen": self.listen.get(node_id, "tcp://127.0.0.1:*"),
               "bootstrap": self.address,
               "state_dir": str(self.state_dir(node_id).relative_to(self.out)), **self.node_options,
               **self.per_node.get(node_id, {})}
        if self.curve:
            cfg |= {"secret_key": f"{KEYS_DIR}/{node_key_name(node_id)}{SECRET_SUFFIX}",
                    "bootstrap_public_key_file": f"{KEYS_DIR}/{BOOTSTRAP_KEY}{PUBLIC_SUFFIX}"}
        write_toml(self.node_config_path(node_id), cfg)
        if fresh:
            # A previous run in this directory left its state: the node would ignore it (--fresh), but the progress
            # and the harness read the metrics file before the new process gets to truncate it.
            shutil.rmtree(self.state_dir(node_id), ignore_errors=True)
        self.state_dir(node_id).mkdir(parents=True, exist_ok=True)
        # (A restarted node keeps its endpoint file: it binds the same port again if it can.)
        log: IO[bytes] = (self.out / f"node{node_id}.log").open("ab" if not fresh else "wb")
        cmd = [*self.prefix.get(node_id, []), sys.executable, "-m", "peernet", "node", "--config",
               str(self.node_config_path(node_id))]
        if fresh:
            cmd.append("--fresh")
        proc = self._spawn(cmd, log, f"node{node_id}")
        self.nodes[node_id] = proc
        return proc

    def _spawn(self, cmd: list[str], log: IO[bytes], name: str, *, own_group: bool = False
               ) -> subprocess.Popen[bytes]:
        # Not cut in half by a stop signal: a process started must be known to stop() and to the reaper.
        with deferred_signals():
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env(),
                                    preexec_fn=die_with_parent(), process_group=0 if own_group else None)
            if self.reaper is not None:
                self.reaper.watch(proc, name)
        return proc

    def endpoint(self, node_id: int, timeout: float = 120.0) -> str:
        """Where a started node listens (from its endpoint file), once it has bound; LaunchError if it exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            address = read_endpoint(self.state_dir(node_id))
            if address is not None:
                return address
            proc = self.nodes.get(node_id)
            if proc is not None and proc.poll() is not None:
                failed = {f"node {node_id}": (proc.returncode, self.out / f"node{node_id}.log")}
                raise LaunchError(f"before it was listening: {describe_failures(failed)}")
            time.sleep(0.05)
        raise LaunchError(f"node {node_id} was not listening within {timeout}s")

    def start(self) -> None:
        self.start_bootstrap()  # a fresh registry even when resuming: every node registers anew
        for node_id in self.topology.ids:
            self.start_node(node_id, fresh=not self.resuming)

    def rounds_done(self) -> dict[int, int]:
        done = {}
        for node_id in self.topology.ids:
            path = self.state_dir(node_id) / "metrics.jsonl"
            rounds = [r["round"] for r in read_jsonl(path) if r.get("event") == "round"] if path.exists() else []
            done[node_id] = max(rounds, default=0)
        return done

    def wait(self, total_rounds: int, *, progress: bool = True, timeout: float | None = None
             ) -> dict[int, int | None]:
        """Wait until every node exits or one fails; return their exit codes (None: still running).

        The caller ends what is left with :meth:`stop` (also on timeout or Ctrl-C).
        """
        bar = Progress(total_rounds, f"local {len(self.nodes)} nodes", enabled=progress, min_interval=1.0)
        start = time.monotonic()
        try:
            while True:
                codes = {i: p.poll() for i, p in self.nodes.items()}
                if all(c is not None for c in codes.values()) or any(c not in (None, 0) for c in codes.values()):
                    return codes
                if timeout is not None and time.monotonic() - start > timeout:
                    raise LaunchError(f"cluster did not finish within {timeout}s")
                done = self.rounds_done()
                bar.update(min(done.values()), slowest=min(done.values()), fastest=max(done.values()))
                time.sleep(0.5)
        finally:
            bar.close()

    def stop(self) -> list[dict[str, Any]]:
        """End every process this cluster started: SIGTERM, then SIGKILL after a grace period; the nodes first,
        so that their last heartbeat still finds the bootstrap instead of retrying against a closed one.

        Returns how each ended: name, pid, exit status (negative: the signal that ended it) and the signal this
        sent (None: it had exited before). Safe to call twice; a stop signal waits until it is done.
        """
        with deferred_signals():
            nodes = {f"node{i}": p for i, p in self.nodes.items()}
            sent = _end(nodes, grace=10.0)
            boot = {"bootstrap": self.bootstrap} if self.bootstrap is not None else {}
            sent |= _end(boot, grace=5.0)
        return [{"name": name, "pid": p.pid, "exit": p.returncode, "ended_by": sent[name]}
                for name, p in (nodes | boot).items()]


def _end(procs: dict[str, subprocess.Popen[bytes]], grace: float) -> dict[str, str | None]:
    """SIGTERM to each running process, SIGKILL to those still there after ``grace`` s; the signal each got."""
    sent: dict[str, str | None] = dict.fromkeys(procs)
    for name, p in procs.items():
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)  # a stopped process would not act on SIGTERM
            p.send_signal(signal.SIGTERM)
            sent[name] = "SIGTERM"
    deadline = time.monotonic() + grace
    for name, p in procs.items():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            sent[name] = "SIGKILL"
    return sent


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Several daemons share the cores: one intra-op thread each unless the user says otherwise.
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env
