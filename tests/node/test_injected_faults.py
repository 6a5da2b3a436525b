"""Daemons behind the fault-injecting transport: delays, duplicates and reordering change nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from peernet.config import RunSettings
from peernet.sim.run import run_simulation
from tests.node.conftest import wait_all
from tests.node.test_daemon_lifecycle import _params


def test_delayed_duplicated_reordered_messages_give_the_exact_result(make_cluster: Any, tmp_path: Path) -> None:
    settings = RunSettings(dataset="quadratic", nodes=4, topology="ring", rounds=150, heterogeneity=3.0)
    faults = {"seed": 7, "delay_ms": [0.0, 15.0], "duplicate": 0.2, "reorder": 0.2}
    cluster = make_cluster(settings, faults=faults)
    cluster.start()
    wait_all(cluster)
    reference = run_simulation(settings, tmp_path / "sim", progress=False)
    x_sim = torch.load(tmp_path / "sim" / "final_params.pt", weights_only=True)["params"]
    assert float((_params(cluster) - x_sim).abs().max()) <= 1e-9
    logs = (cluster.out / "node0.log").read_text()
    assert "fault injection is on" in logs
    summaries = [json.loads((cluster.state_dir(i) / "summary.json").read_text()) for i in range(4)]
    assert all(s["finished"] for s in summaries)
    # The duplicates really were sent and recognised as such.
    assert sum(s.get("ignored", {}).get("duplicate", 0) for s in summaries) > 0
    assert reference["rounds"] == 150
