"""``peernet local``: a bootstrap and N node daemons as separate OS processes on 127.0.0.1.

The launcher writes a complete, self-contained run directory (run settings, topology, bootstrap and
node configs), starts real processes that talk over real sockets on random free ports, shows one
combined progress line from the nodes' metrics files, and merges the results at the end.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from peernet.config import RunSettings, resolve_topology
from peernet.core.topology import Topology, save_topology
from peernet.errors import PeernetError
from peernet.metrics.jsonl import read_jsonl
from peernet.metrics.progress import Progress


class LaunchError(PeernetError):
    """A process of the local cluster failed to start or exited with an error."""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_toml(path: Path, data: dict[str, Any]) -> None:
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")


@dataclasses.dataclass
class LocalCluster:
    """Run directory layout and the processes of one local run."""

    out: Path
    settings: RunSettings
    topology: Topology
    node_options: dict[str, Any]
    bootstrap: subprocess.Popen[bytes] | None = None
    nodes: dict[int, subprocess.Popen[bytes]] = dataclasses.field(default_factory=dict)
    address: str = ""

    @classmethod
    def prepare(cls, settings: RunSettings, out: str | Path, node_options: dict[str, Any] | None = None
                ) -> LocalCluster:
        out = Path(out)
        topology = resolve_topology(settings)  # before creating anything: a bad topology leaves no trace
        out.mkdir(parents=True, exist_ok=True)
        save_topology(topology, out / "topology.toml")
        run = dataclasses.asdict(settings)
        run["topology"] = "topology.toml"
        run["nodes"] = topology.n
        if run["data_dir"] is not None:
            run["data_dir"] = str(Path(run["data_dir"]).resolve())
        write_toml(out / "run.toml", run)
        write_toml(out / "bootstrap.toml", {"listen": "tcp://127.0.0.1:*", "run": "run.toml",
                                            "state_dir": "bootstrap"})
        return cls(out=out, settings=settings, topology=topology, node_options=dict(node_options or {}))

    def node_config_path(self, node_id: int) -> Path:
        return self.out / f"node{node_id}.toml"

    def state_dir(self, node_id: int) -> Path:
        return self.out / "nodes" / f"node{node_id}"

    def start_bootstrap(self, timeout: float = 60.0) -> str:
        log = (self.out / "bootstrap.log").open("wb")
        self.bootstrap = subprocess.Popen([sys.executable, "-m", "peernet", "bootstrap", "--config",
                                           str(self.out / "bootstrap.toml"), "--fresh"],
                                          stdout=log, stderr=subprocess.STDOUT, env=_child_env())
        pattern = re.compile(r"bootstrap listening on (tcp://\S+)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = pattern.search((self.out / "bootstrap.log").read_text(errors="replace"))
            if match:
                self.address = match.group(1)
                return self.address
            if self.bootstrap.poll() is not None:
                raise LaunchError(f"bootstrap exited with status {self.bootstrap.returncode}; see "
                                  f"{self.out / 'bootstrap.log'}")
            time.sleep(0.05)
        raise LaunchError(f"bootstrap did not report its address within {timeout}s")

    def start_node(self, node_id: int, *, fresh: bool = True) -> subprocess.Popen[bytes]:
        cfg = {"id": node_id, "run": "run.toml", "listen": "tcp://127.0.0.1:*", "bootstrap": self.address,
               "state_dir": str(self.state_dir(node_id).relative_to(self.out)), **self.node_options}
        write_toml(self.node_config_path(node_id), cfg)
        self.state_dir(node_id).mkdir(parents=True, exist_ok=True)
        log: IO[bytes] = (self.out / f"node{node_id}.log").open("ab")
        cmd = [sys.executable, "-m", "peernet", "node", "--config", str(self.node_config_path(node_id))]
        if fresh:
            cmd.append("--fresh")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env())
        self.nodes[node_id] = proc
        return proc

    def start(self) -> None:
        self.start_bootstrap()
        for node_id in self.topology.ids:
            self.start_node(node_id)

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

    def stop(self) -> None:
        """End every process this cluster started: SIGTERM, then SIGKILL after a grace period."""
        procs = [p for p in [*self.nodes.values(), self.bootstrap] if p is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Several daemons share the cores: one intra-op thread each unless the user says otherwise.
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env
