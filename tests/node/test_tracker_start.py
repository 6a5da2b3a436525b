"""The daemons' average tracker start: K gossip rounds that equal the simulator's and keep the tracker sum exact,
a node crashing for good in the middle of them included (protocol mode: the daemons' own code, deterministic)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from peernet.errors import ConfigError
from peernet.metrics.jsonl import read_jsonl
from peernet.node.inproc import InProcessCluster
from peernet.node.results import final_params, merge_run
from peernet.sim.protocol import run_protocol
from peernet.sim.run import run_simulation
from peernet.tasks import make_task
from tests.clusters import RING8_QUADRATIC

AVERAGE = dataclasses.replace(RING8_QUADRATIC, nodes=6, rounds=120, seed=2, tracker_init="average",
                              tracker_init_rounds=8)


def test_daemons_run_the_simulators_start(tmp_path: Path) -> None:
    run_simulation(AVERAGE, tmp_path / "sim", progress=False)
    summary = run_protocol(AVERAGE, tmp_path / "daemons", progress=False)
    nodes = {i: tmp_path / "daemons" / "nodes" / f"node{i}" for i in range(6)}
    x_sim = torch.load(tmp_path / "sim" / "final_params.pt", weights_only=True)["params"]
    assert float((x_sim - final_params(nodes)).abs().max()) <= 1e-12
    assert summary["tracker_sum_error"] <= 1e-12
    # The start's rounds reuse the one gradient they took: the same loss until the first descent has been made.
    losses = [r["loss"] for r in read_jsonl(nodes[0] / "metrics.jsonl") if r.get("event") == "round"]
    assert len(set(losses[:9])) == 1 and losses[9] != losses[0]
    zero = dataclasses.replace(AVERAGE, tracker_init="zero", tracker_init_rounds=0)
    run_simulation(zero, tmp_path / "zero", progress=False)
    x_zero = torch.load(tmp_path / "zero" / "final_params.pt", weights_only=True)["params"]
    assert float((x_sim - x_zero).abs().max()) > 1e-6  # the start did change the run


def test_a_node_lost_during_the_start_leaves_the_survivors_exact(tmp_path: Path) -> None:
    """Node 3 of the exponential graph dies at round 10 of a 20-round start: its neighbours roll the flows of its
    edges back, start ones included, and the survivors reach their own optimum — the tracker sum held."""
    dead = 3
    settings = dataclasses.replace(RING8_QUADRATIC, topology="exponential", rounds=400, seed=3,
                                   tracker_init="average", tracker_init_rounds=20)
    summary = run_protocol(settings, tmp_path, crashes={dead: 10}, progress=False,
                           node_options={"deadline_floor": 1.0, "deadline_ceiling": 3.0})
    survivors = [i for i in range(8) if i != dead]
    assert summary["survivors"] == survivors and summary["finished_nodes"] == 7
    ends = {i: json.loads((tmp_path / "nodes" / f"node{i}" / "summary.json").read_text()) for i in survivors}
    assert {i for i, e in ends.items() if e["timeouts"]} == {1, 2, 4, 5, 7}  # its five neighbours excluded it
    problem = make_task(settings, 8).problem  # type: ignore[union-attr]
    target = problem.optimum_of(survivors, settings.weight_decay)
    x = final_params({i: tmp_path / "nodes" / f"node{i}" for i in survivors})
    assert problem.distance_to_optimum(x, optimum=target) <= 1e-6
    assert summary["tracker_sum_error"] <= 1e-9


def test_nodes_restarted_during_the_start(make_inproc: Callable[..., InProcessCluster]) -> None:
    """Nodes 1 and 4 of a ring of 6 die in the middle of a 20-round start and come back: node 1 from its checkpoint,
    keeping its first momentum; node 4 from its neighbours' average, starting afresh and taking its own. Their
    neighbours roll their edges back; the run ends at the global optimum with the tracker sum exact, and every round
    record carries a real loss."""
    settings = dataclasses.replace(RING8_QUADRATIC, nodes=6, rounds=400, tracker_init="average", tracker_init_rounds=20)
    ways = {1: "checkpoint", 4: "average"}
    # A floor far above an in-process restart, and a ceiling that bounds the test if a neighbour still times out.
    cluster = make_inproc(settings, deadline_floor=8.0, deadline_ceiling=10.0,
                          per_node={i: {"checkpoint_every": 2, "rejoin": way} for i, way in ways.items()})
    cluster.start()
    for i in ways:
        cluster.wait_round(i, 6)
        cluster.kill(i)
        cluster.start_node(i, fresh=False)
    ends = cluster.wait()
    s = merge_run(settings, cluster.topology, {i: cluster.state_dir(i) for i in range(6)}, 0.0)
    assert s["finished_nodes"] == 6 and s["rejoined_nodes"] == [1, 4]
    rejoined: dict[int, int] = {}
    for i, way in ways.items():
        assert ends[i]["parameters_from"] == way
        records = [r for r in read_jsonl(cluster.state_dir(i) / "metrics.jsonl")
                   if r.get("event") in ("start", "round")]
        starts = [r for r in records if r["event"] == "start"]
        rejoined[i] = starts[-1]["round"]
        assert 0 < starts[-1]["resumed_from"] <= rejoined[i] < 20  # back within the start
        assert all(math.isfinite(r["loss"]) for r in records if r["event"] == "round")
        took = [r["round"] for r in records if r.get("first_momentum")]  # a record's round is the one it finished
        assert took == ([1] if way == "checkpoint" else [1, rejoined[i] + 1])
    assert s["tracker_sum_error"] <= 1e-9 and s["distance_to_optimum"] <= 1e-6


def test_daemons_refuse_the_exact_start_before_writing_anything(tmp_path: Path) -> None:
    exact = dataclasses.replace(AVERAGE, tracker_init_rounds=0)
    with pytest.raises(ConfigError, match="only the simulator can compute") as info:
        run_protocol(exact, tmp_path / "daemons", progress=False)
    assert info.value.key == "tracker_init_rounds" and not (tmp_path / "daemons").exists()
