"""ClippedGossip in the simulator: the tracker sum stays exact, and the daemons compute the very same run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from peernet.config import RunSettings
from peernet.core.algorithms import HyperParams, get_algorithm
from peernet.core.clipping import clip_radii
from peernet.core.topology import generate
from peernet.errors import SimulationError
from peernet.node.results import final_params
from peernet.sim.engine import Simulator
from peernet.sim.protocol import run_protocol
from peernet.sim.run import run_simulation
from peernet.tasks import QuadraticTask

RING8 = RunSettings(algorithm="momentum-tracking", topology="ring", nodes=8, dataset="quadratic", heterogeneity=3.0,
                    lr=0.05, rounds=300, seed=0, clip_tau=0.5)
QUAD6 = RunSettings(algorithm="momentum-tracking", topology="ring", nodes=6, dataset="quadratic", heterogeneity=3.0,
                    lr=0.05, rounds=120, seed=3, clip_tau=1.0, clip_tau_tracker=0.5)


def _simulator(settings: RunSettings, clip: bool = True) -> Simulator:
    algorithm = get_algorithm(settings.algorithm)
    radii = clip_radii(algorithm, settings.clip_tau, settings.clip_tau_tracker) if clip else None
    return Simulator(QuadraticTask(settings, settings.nodes), generate("ring", settings.nodes), algorithm,
                     HyperParams(lr=settings.step_size), clip=radii)


@pytest.mark.parametrize("algorithm", ["momentum-tracking", "gradient-tracking"])
def test_tracker_sum_stays_exact_every_round(algorithm: str) -> None:
    settings = dataclasses.replace(RING8, algorithm=algorithm)
    sim, plain = _simulator(settings), _simulator(settings, clip=False)
    worst, apart = 0.0, 0.0
    for _ in range(settings.rounds or 0):
        sim.step()
        plain.step()
        worst = max(worst, float(sim.node_state("c").sum(dim=0).abs().max()))
        apart = max(apart, float((sim.X - plain.X).abs().max()))
    assert worst <= 1e-12
    assert apart > 0.1  # the clipping did act (τ = 0.5 is below the early pulls)


def test_the_daemons_compute_the_same_clipped_run(tmp_path: Path) -> None:
    run_protocol(QUAD6, tmp_path / "daemons", progress=False)  # the daemon's own code, deterministic
    run_simulation(QUAD6, tmp_path / "sim", progress=False)
    x_sim = torch.load(tmp_path / "sim" / "final_params.pt", weights_only=True)["params"]
    x_daemons = final_params({i: tmp_path / "daemons" / "nodes" / f"node{i}" for i in range(6)})
    assert float((x_daemons - x_sim).abs().max()) <= 1e-12
    run_simulation(dataclasses.replace(QUAD6, clip_tau=None, clip_tau_tracker=None), tmp_path / "plain",
                   progress=False)
    x_plain = torch.load(tmp_path / "plain" / "final_params.pt", weights_only=True)["params"]
    assert float((x_plain - x_sim).abs().max()) > 0.1  # and the clipping changed the run


def test_clipped_flows_roll_back_exactly_under_lost_messages(tmp_path: Path) -> None:
    """Dropped messages exclude edges; each end takes back the clipped flow it recorded, so the trackers of the
    daemons still sum to zero."""
    faults = {"seed": 5, "drop": 0.05, "duplicate": 0.1, "reorder": 0.1}
    summary = run_protocol(QUAD6, tmp_path / "p", node_options={"faults": faults}, progress=False)
    ends = [json.loads((tmp_path / "p" / "nodes" / f"node{i}" / "summary.json").read_text()) for i in range(6)]
    assert sum(e["rollbacks"] for e in ends) > 0  # the drops did exclude edges
    assert summary["tracker_sum_error"] <= 1e-9


def test_no_implicit_flows_with_clipping() -> None:
    algorithm = get_algorithm("momentum-tracking")
    with pytest.raises(SimulationError, match="clip_tau"):
        Simulator(QuadraticTask(RING8, 8), generate("ring", 8), algorithm, HyperParams(lr=0.05), track_flows=True,
                  clip={"x": 1.0})
    sim = _simulator(RING8)
    assert sim.flows is None and sim._X.blocks == 1  # one column block: a pull's norm spans the whole row
    with pytest.raises(SimulationError):
        sim.crash(0)
