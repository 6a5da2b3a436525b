"""Fixtures that start real bootstrap and node processes on 127.0.0.1 and always end them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peernet.config import RunSettings
from peernet.node.launcher import LocalCluster

CLUSTER_TIMEOUT = 300


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """``make_cluster(settings, **node_options)`` prepares a run directory; every process is stopped at the end.

    Clusters run with CURVE, as `peernet local` does, unless ``curve=False``.
    """
    made: list[LocalCluster] = []

    def factory(settings: RunSettings, name: str = "run", curve: bool = True, **node_options: Any) -> LocalCluster:
        options = {"checkpoint_every": 5, "deadline_ceiling": 10.0, "bootstrap_timeout": 1.0, **node_options}
        cluster = LocalCluster.prepare(settings, tmp_path / name, options, curve=curve)
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        cluster.stop()


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
    import time

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
