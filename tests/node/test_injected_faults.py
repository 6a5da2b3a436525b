"""Daemons behind the fault-injecting transport: delays, duplicates and reordering change nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from peernet.config import RunSettings
from peernet.node.inproc import InProcessCluster
from peernet.sim.run import run_simulation
from tests.clusters import params


def test_delayed_duplicated_reordered_messages_give_the_exact_result(
        make_inproc: Callable[..., InProcessCluster], tmp_path: Path) -> None:
    settings = RunSettings(dataset="quadratic", nodes=4, topology="ring", rounds=150, heterogeneity=3.0)
    faults = {"seed": 7, "delay_ms": [0.0, 15.0], "duplicate": 0.2, "reorder": 0.2}
    cluster = make_inproc(settings, faults=faults, deadline_floor=5.0, deadline_ceiling=10.0)
    cluster.start()
    ends = cluster.wait()
    reference = run_simulation(settings, tmp_path / "sim", progress=False)
    x_sim = torch.load(tmp_path / "sim" / "final_params.pt", weights_only=True)["params"]
    assert float((params(cluster) - x_sim).abs().max()) <= 1e-9
    assert all(s["finished"] and s["timeouts"] == {} for s in ends.values())
    # The faults really were injected: delayed, duplicated and reordered messages went out ...
    injected = [s["injected"] for s in ends.values()]
    for kind in ("injected_delay", "injected_duplicate", "injected_reorder"):
        assert sum(st[kind] for st in injected) > 0, (kind, injected)
    # ... and the duplicates were recognised as such.
    assert sum(s.get("ignored", {}).get("duplicate", 0) for s in ends.values()) > 0
    assert reference["rounds"] == 150
