"""The daemons' average tracker start: K gossip rounds that equal the simulator's and keep the tracker sum exact,
a node crashing for good in the middle of them included (protocol mode: the daemons' own code, deterministic)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from peernet.metrics.jsonl import read_jsonl
from peernet.node.results import final_params
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
    settings = dataclasses.replace(RING8_QUADRATIC, topology="exponential", rounds=600, seed=3,
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
