"""A node killed for good: survivors exclude it within the deadline and, with rollback, reach their own optimum."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

from peernet.config import RunSettings
from peernet.metrics.jsonl import read_jsonl
from peernet.node.launcher import LocalCluster
from peernet.node.results import final_params
from peernet.tasks import make_task
from tests.node.conftest import make_cluster as make_cluster
from tests.node.conftest import wait_for_round

ROUNDS = 3000
CRASH_AT = 200
DEAD = 3
CEILING = 3.0
QUAD = RunSettings(algorithm="momentum-tracking", topology="ring", nodes=8, dataset="quadratic", heterogeneity=3.0,
                   lr=0.05, rounds=ROUNDS, seed=0)
OPTIONS: dict[str, Any] = {"deadline_floor": 1.0, "deadline_ceiling": CEILING, "checkpoint_every": 100}


def wait_nodes(cluster: LocalCluster, ids: list[int], timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = {i: cluster.nodes[i].poll() for i in ids}
        if all(c is not None for c in codes.values()):
            assert all(c == 0 for c in codes.values()), f"exit codes {codes}; logs in {cluster.out}"
            return
        time.sleep(0.2)
    raise AssertionError(f"nodes {ids} did not finish within {timeout}s; logs in {cluster.out}")


def run_with_crash(make_cluster: Callable[..., LocalCluster], name: str, rollback: bool) -> tuple[float, float, Any]:
    cluster = make_cluster(QUAD, name=name, **OPTIONS, rollback=rollback)
    cluster.start()
    wait_for_round(cluster, DEAD, CRASH_AT)
    cluster.nodes[DEAD].send_signal(signal.SIGKILL)
    cluster.nodes[DEAD].wait(timeout=10)
    survivors = [i for i in range(8) if i != DEAD]
    wait_nodes(cluster, survivors)
    problem = make_task(QUAD, 8).problem  # type: ignore[union-attr]
    target = problem.optimum_of(survivors, QUAD.weight_decay)
    X = final_params({i: cluster.state_dir(i) for i in survivors})
    distance = problem.distance_to_optimum(X, optimum=target)
    waits = [rec["wait_s"] for i in survivors for rec in read_jsonl(cluster.state_dir(i) / "metrics.jsonl")
             if rec.get("event") == "round"]
    summaries = {i: read_jsonl(cluster.state_dir(i) / "metrics.jsonl")[-1] for i in survivors}
    return distance, max(waits), summaries


def test_survivors_reach_their_optimum_only_with_rollback(make_cluster: Callable[..., LocalCluster]) -> None:
    with_rb, max_wait, summaries = run_with_crash(make_cluster, "rollback", rollback=True)
    without, _, _ = run_with_crash(make_cluster, "no-rollback", rollback=False)
    print(f"\ndistance to the survivors' optimum: with rollback {with_rb:.3g}, without {without:.3g}; "
          f"longest wait {max_wait:.2f}s (ceiling {CEILING}s)")
    assert all(s["finished"] for s in summaries.values())
    assert with_rb <= 1e-6
    assert without > 1e-3
    # No round waited past the ceiling (0.1 s: handling the one message that may arrive as the deadline expires).
    assert max_wait <= CEILING + 0.1
