"""Protocol mode: the daemons' own code, scheduled deterministically in one process."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from peernet.config import RunSettings
from peernet.node.results import final_params
from peernet.sim.protocol import run_protocol
from peernet.sim.run import run_simulation

QUAD = RunSettings(algorithm="momentum-tracking", topology="ring", nodes=6, dataset="quadratic", heterogeneity=3.0,
                   lr=0.05, rounds=120, seed=3)


def _params(out: Path, ids: list[int]) -> torch.Tensor:
    return final_params({i: out / "nodes" / f"node{i}" for i in ids})


def test_same_seed_same_run_message_for_message(tmp_path: Path) -> None:
    faults = {"seed": 5, "drop": 0.05, "duplicate": 0.1, "reorder": 0.1}
    one = run_protocol(QUAD, tmp_path / "a", node_options={"faults": faults}, progress=False)
    two = run_protocol(QUAD, tmp_path / "b", node_options={"faults": faults}, progress=False)
    ids = list(range(6))
    assert torch.equal(_params(tmp_path / "a", ids), _params(tmp_path / "b", ids))
    ends = [[json.loads((out / "nodes" / f"node{i}" / "summary.json").read_text()) for i in ids]
            for out in (tmp_path / "a", tmp_path / "b")]
    for key in ("timeouts", "dropped", "ignored", "rollbacks", "bytes_out"):
        assert [e[key] for e in ends[0]] == [e[key] for e in ends[1]], key
    assert one["virtual_seconds"] == two["virtual_seconds"] > 0  # lost messages were waited for, in virtual time
    assert sum(e["rollbacks"] for e in ends[0]) > 0  # the drops did exclude edges
    assert one["tracker_sum_error"] <= 1e-9  # and every exclusion was rolled back exactly


@pytest.mark.parametrize("algorithm", ["momentum-tracking", "dsgdm"])  # with and without a tracker's edge flows
def test_without_faults_it_equals_the_simulator(tmp_path: Path, algorithm: str) -> None:
    settings = dataclasses.replace(QUAD, algorithm=algorithm)
    summary = run_protocol(settings, tmp_path / "p", progress=False)
    run_simulation(settings, tmp_path / "s", progress=False)
    x_sim = torch.load(tmp_path / "s" / "final_params.pt", weights_only=True)["params"]
    assert float((_params(tmp_path / "p", list(range(6))) - x_sim).abs().max()) <= 1e-12
    assert summary["virtual_seconds"] < 1.0  # nobody ever waited for a deadline


def test_a_wait_that_ends_a_fraction_of_an_ulp_away_does_not_freeze_the_run(tmp_path: Path) -> None:
    """These faults once froze the run at round 14: every node waited for the last 1.8e-15 s of its deadline,
    which at 19.7 virtual seconds the clock cannot add, so time never moved again."""
    summary = run_protocol(QUAD, tmp_path, node_options={"faults": {"seed": 5, "drop": 0.05}}, progress=False)
    assert summary["finished_nodes"] == 6
