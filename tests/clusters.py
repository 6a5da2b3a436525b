"""Helpers for tests that run clusters: real processes (LocalCluster) and in-process ones (InProcessCluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from peernet.config import RunSettings
from peernet.node.launcher import LocalCluster
from peernet.node.results import final_params
from peernet.sim.run import run_simulation

CLUSTER_TIMEOUT = 300
LENET = dict(dataset="fashion-mnist", model="lenet", nodes=4, topology="ring", batch_size=32, lr=0.01,
             eval_samples=500)
#: The fault tests' run: Momentum Tracking on an 8-node ring of heterogeneous quadratics (float64, exact
#: optimum); each test sets its own length with dataclasses.replace.
RING8_QUADRATIC = RunSettings(algorithm="momentum-tracking", topology="ring", nodes=8, dataset="quadratic",
                              heterogeneity=3.0, lr=0.05, rounds=1000, seed=0)
#: Sub-second rounds on the quadratic task: deadlines an in-process cluster meets easily on a busy 2-core box.
FAST: dict[str, Any] = {"deadline_floor": 0.5, "deadline_ceiling": 2.0, "bootstrap_timeout": 1.0,
                        "heartbeat_every": 0.2, "rejoin_wait": 2.0}


def reference(settings: RunSettings, tmp_path: Path) -> torch.Tensor:
    """The same run in the per-node simulator loop, which computes exactly like the daemons.

    With one torch thread, as each daemon has: float32 convolutions split over two threads sum in
    another order (measured: 2e-3 apart after 80 rounds), and bit-exactness is the point here.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_simulation(settings, tmp_path / "reference", mode="loop", progress=False)
    finally:
        torch.set_num_threads(threads)
    return torch.load(tmp_path / "reference" / "final_params.pt", weights_only=True)["params"]


def params(cluster: Any) -> torch.Tensor:
    """The final parameters of every node of a finished cluster (either kind), stacked by node id."""
    return final_params({i: cluster.state_dir(i) for i in cluster.topology.ids})


def summaries(cluster: Any) -> dict[int, dict[str, Any]]:
    """Every node's summary.json (nodes that never finished have none)."""
    out = {}
    for i in cluster.topology.ids:
        path = cluster.state_dir(i) / "summary.json"
        if path.exists():
            out[i] = json.loads(path.read_text())
    return out


def wait_nodes(cluster: LocalCluster, ids: list[int], timeout: float = 240.0) -> None:
    """Wait for the given node processes to exit, all with status 0."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = {i: cluster.nodes[i].poll() for i in ids}
        if all(c is not None for c in codes.values()):
            assert all(c == 0 for c in codes.values()), f"exit codes {codes}; logs in {cluster.out}"
            return
        time.sleep(0.2)
    raise AssertionError(f"nodes {ids} did not finish within {timeout}s; logs in {cluster.out}")


def run_cli(args: list[str], timeout: float = CLUSTER_TIMEOUT,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m peernet ARGS`` as a real process (killed on timeout by subprocess.run)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "peernet", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


def last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


def wait_for_round(cluster: LocalCluster, node_id: int, round_: int, timeout: float = 120.0) -> int:
    """Block until ``node_id`` has logged ``round_`` (or fail the test after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = cluster.rounds_done()[node_id]
        if done >= round_:
            return done
        proc = cluster.nodes.get(node_id)
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"node {node_id} exited with {proc.returncode} before round {round_}"
                                 f"{log_tails(cluster)}")
        time.sleep(0.1)
    raise AssertionError(f"node {node_id} did not reach round {round_} within {timeout}s (rounds logged: "
                         f"{cluster.rounds_done()}){log_tails(cluster)}")


def log_tails(cluster: LocalCluster, lines: int = 15) -> str:
    """The last lines of every process log of ``cluster``: a failure on CI must say what the nodes were doing."""
    out = []
    for path in sorted(cluster.out.glob("*.log")):
        tail = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        out.append(f"\n--- {path.name} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "".join(out)


def wait_all(cluster: LocalCluster, timeout: float = CLUSTER_TIMEOUT) -> dict[int, int | None]:
    codes = cluster.wait(1, progress=False, timeout=timeout)
    assert all(c == 0 for c in codes.values()), f"exit codes {codes}; logs in {cluster.out}"
    return codes
