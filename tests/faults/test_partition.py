"""A partition into two halves for 30 rounds: consensus distance rises, then returns; the run stays exact.

Run in protocol mode: the daemons' own code with the partition injected by their fault-injecting transport,
scheduled deterministically, so the heal is tested at the same interleaving every time (partitions of real
networks in namespaces: tests/chaos and tests/faults/test_scenarios.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from peernet.core.mixing import consensus_distance
from peernet.metrics.jsonl import read_jsonl
from peernet.node.results import final_params
from peernet.sim.protocol import run_protocol
from peernet.tasks import make_task
from tests.clusters import RING8_QUADRATIC

START, END = 300, 330
QUAD = dataclasses.replace(RING8_QUADRATIC, rounds=1000, eval_every=10)
# Every node runs the fault-injecting transport with the same partition: rounds [300, 330) cut {0..3} from {4..7}.
FAULTS: dict[str, Any] = {"partitions": [{"groups": [[0, 1, 2, 3]], "from_round": START, "to_round": END}]}


def global_consensus(out: Path) -> dict[int, float]:
    """mean_i ‖x_i − x̄‖² at every evaluation round, from the parameters each node recorded."""
    per_node = [{rec["round"]: rec["params"] for rec in read_jsonl(out / "nodes" / f"node{i}" / "metrics.jsonl")
                 if rec.get("event") == "eval"} for i in range(8)]
    rounds = sorted(set.intersection(*(set(p) for p in per_node)))
    return {r: consensus_distance(torch.tensor([p[r] for p in per_node], dtype=torch.float64)) for r in rounds}


def test_partition_then_heal(tmp_path: Path) -> None:
    options = {"record_params": True, "faults": FAULTS, "deadline_floor": 1.0, "deadline_ceiling": 3.0}
    summary = run_protocol(QUAD, tmp_path, node_options=options, progress=False)
    assert summary["finished_nodes"] == 8
    dist = global_consensus(tmp_path)
    before = dist[START]
    during = max(v for r, v in dist.items() if START < r <= END)
    after = {r: v for r, v in dist.items() if r > END}
    back = min(r for r, v in after.items() if v <= 2 * before)
    problem = make_task(QUAD, 8).problem  # type: ignore[union-attr]
    final = problem.distance_to_optimum(final_params({i: tmp_path / "nodes" / f"node{i}" for i in range(8)}))
    print(f"\nconsensus distance: {before:.3g} at round {START}, up to {during:.3g} during the partition, "
          f"back under 2x at round {back}, {dist[max(dist)]:.3g} at the end; distance to optimum {final:.3g}; "
          f"{summary['timeouts']} exclusions, {summary['catchups']} catch-ups")
    assert summary["timeouts"] >= 4  # the four cut edges were excluded ...
    assert during > 10 * before       # the halves drift apart
    assert dist[max(dist)] <= 2 * before  # ... and agree again once healed
    assert final <= 1e-6               # and the trackers are exact again: the global optimum is reached
    assert summary["tracker_sum_error"] <= 1e-9
