"""A node killed for good: survivors exclude it within the deadline and, with rollback, reach their own optimum.

Run in protocol mode (the daemons' own exchange, round policy and edge bookkeeping, scheduled deterministically
over virtual time), and compared with the vectorized simulator's crash, whose bookkeeping is the second form
of the churn rule (peernet/core/churn.py, docs/design.md §3). A real SIGKILL is tests/faults/test_scenarios.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from peernet.config import RunSettings, resolve_topology
from peernet.core.algorithms import HyperParams, get_algorithm
from peernet.metrics.jsonl import read_jsonl
from peernet.node.results import final_params
from peernet.sim.engine import Simulator
from peernet.sim.protocol import run_protocol
from peernet.tasks import make_task
from tests.clusters import RING8_QUADRATIC

DEAD, AT = 3, 200
CEILING = 3.0
# The exponential graph of 8: node 3 has five neighbours, and its survivors stay well connected, so they reach
# their optimum in hundreds of rounds (on the ring they form a path, which took 3,000 rounds and 18 s here).
QUAD = dataclasses.replace(RING8_QUADRATIC, topology="exponential", rounds=600, seed=3)
SURVIVORS = [i for i in range(8) if i != DEAD]


def _vectorized_crash(settings: RunSettings, rollback: bool) -> torch.Tensor:
    hp = HyperParams(lr=settings.step_size, beta=settings.beta, weight_decay=settings.weight_decay)
    sim = Simulator(make_task(settings, settings.nodes), resolve_topology(settings),
                    get_algorithm(settings.algorithm), hp, mode="vectorized")
    for r in range(settings.rounds):
        if r == AT:
            sim.crash(DEAD, rollback=rollback)
        sim.step()
    return sim.X[SURVIVORS]


@pytest.mark.parametrize("rollback", [True, False])
def test_survivors_reach_their_optimum_only_with_rollback(tmp_path: Path, rollback: bool) -> None:
    options = {"deadline_floor": 1.0, "deadline_ceiling": CEILING, "rollback": rollback}
    settings = QUAD
    summary = run_protocol(settings, tmp_path, crashes={DEAD: AT}, node_options=options, progress=False)
    assert summary["survivors"] == SURVIVORS and summary["finished_nodes"] == 7
    ends = {i: json.loads((tmp_path / "nodes" / f"node{i}" / "summary.json").read_text()) for i in SURVIVORS}
    # Its neighbours excluded it (once each: the edge stays down), nobody else was ever excluded.
    neighbours = resolve_topology(QUAD).neighbours(DEAD)
    assert {i: e["timeouts"] for i, e in ends.items() if e["timeouts"]} == {j: {"3": 1} for j in neighbours}
    waits = [rec["wait_s"] for i in SURVIVORS for rec in read_jsonl(tmp_path / "nodes" / f"node{i}" / "metrics.jsonl")
             if rec.get("event") == "round"]
    assert max(waits) <= CEILING  # no round waited past the ceiling (virtual seconds)
    problem = make_task(QUAD, 8).problem  # type: ignore[union-attr]
    target = problem.optimum_of(SURVIVORS, QUAD.weight_decay)
    protocol = final_params({i: tmp_path / "nodes" / f"node{i}" for i in SURVIVORS})
    vectorized = _vectorized_crash(settings, rollback)
    distance = problem.distance_to_optimum(protocol, optimum=target)
    gap = float((protocol - vectorized).abs().max())
    print(f"\nrollback={rollback}: {distance:.3g} from the survivors' optimum (vectorized "
          f"{problem.distance_to_optimum(vectorized, optimum=target):.3g}), gap {gap:.3g}, longest wait "
          f"{max(waits):.2f} s")
    if rollback:
        assert distance <= 1e-6 and summary["tracker_sum_error"] <= 1e-9
        # The vectorized form lands the rollback one round earlier (at the boundary, not after the deadline).
        assert gap <= 1e-7
    else:
        assert distance > 1e-3  # the departed node's share stays in the trackers: a permanent bias
        assert gap <= 1e-12  # no rollback, no timing to differ: the same computation as the vectorized crash


def test_with_compression_survivors_reach_their_optimum(tmp_path: Path) -> None:
    """Compressed gossip (top-20%): the dead node's edges drop at its neighbours, whose tracker flows over them, the
    terms γ W_ij (d̂_j − d̂_i) mixed in from the public copies, are rolled back exactly. The exponential graph
    stays well connected without node 3 (a ring of 8 becomes a path, which mixes slowly)."""
    settings = dataclasses.replace(QUAD, topology="exponential", dim=20, heterogeneity=1.0, lr=0.1, beta=0.5,
                                   rounds=200, compression="topk", compression_ratio=0.2)
    summary = run_protocol(settings, tmp_path, crashes={DEAD: 30}, node_options={"deadline_ceiling": CEILING},
                           progress=False)
    assert summary["survivors"] == SURVIVORS and summary["finished_nodes"] == 7
    ends = {i: json.loads((tmp_path / "nodes" / f"node{i}" / "summary.json").read_text()) for i in SURVIVORS}
    assert {i for i, e in ends.items() if e["timeouts"]} == {1, 2, 4, 5, 7}  # its five neighbours, once each
    problem = make_task(settings, 8).problem  # type: ignore[union-attr]
    target = problem.optimum_of(SURVIVORS, settings.weight_decay)
    survivors = final_params({i: tmp_path / "nodes" / f"node{i}" for i in SURVIVORS})
    assert problem.distance_to_optimum(survivors, optimum=target) <= 1e-6
    assert summary["tracker_sum_error"] <= 1e-9
