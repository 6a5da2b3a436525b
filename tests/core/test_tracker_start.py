"""The average tracker start: its rounds, the exact start's first direction, the gossip start's W^K u, the settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from peernet.config import RunSettings, resolve_topology, tracker_start
from peernet.core.algorithms import HyperParams, get_algorithm
from peernet.core.tracker_start import AverageStart, average_start
from peernet.errors import AlgorithmError, ConfigError, SimulationError
from peernet.node.config import load_node_config
from peernet.sim.engine import Simulator
from peernet.tasks import make_task

QUAD = RunSettings(algorithm="momentum-tracking", topology="ring", nodes=8, dataset="quadratic", heterogeneity=3.0,
                   lr=0.05, rounds=400, seed=1)


def test_phases_and_gradients() -> None:
    start = AverageStart(3)
    assert [start.phase(r) for r in range(6)] == ["average"] * 3 + ["first", "train", "train"]
    # One gradient, the first momentum, then none until training; a node without one (rejoined) takes its own.
    assert [start.takes_gradient(r, has_momentum=r > 0) for r in range(6)] == [True, False, False, False, True, True]
    assert start.takes_gradient(2, has_momentum=False)
    assert AverageStart(0).exact and AverageStart(0).phase(0) == "first" and not AverageStart(1).exact
    assert average_start("zero", 0) is None and average_start("average", 4) == AverageStart(4)
    with pytest.raises(AlgorithmError, match="0 or more"):
        AverageStart(-1)
    with pytest.raises(AlgorithmError, match="unknown tracker start"):
        average_start("global", 0)


def _simulator(settings: RunSettings, start: AverageStart | None, **kwargs: object) -> Simulator:
    hp = HyperParams(lr=settings.step_size, beta=settings.beta, weight_decay=settings.weight_decay)
    return Simulator(make_task(settings, settings.nodes), resolve_topology(settings),
                     get_algorithm(settings.algorithm), hp, mode="vectorized", start=start, **kwargs)  # type: ignore[arg-type]


def _first_momentum(sim: Simulator) -> torch.Tensor:
    """Every node's first gradient with weight decay, computed here from the problem itself."""
    X0 = sim.X.clone()
    _, grads = sim.task.problem.losses_and_grads(X0)  # type: ignore[attr-defined]
    return grads + sim.hp.weight_decay * X0


@pytest.mark.parametrize("algorithm", ["momentum-tracking", "gradient-tracking"])
def test_exact_start_descends_along_the_global_average_gradient(algorithm: str) -> None:
    settings = dataclasses.replace(QUAD, algorithm=algorithm)
    sim = _simulator(settings, AverageStart(0))
    x0, u = sim.X.clone(), _first_momentum(sim)
    sim.step()
    expected = x0 - settings.step_size * u.mean(dim=0, keepdim=True)
    scale = float(expected.abs().max())
    assert float((sim.X - expected).abs().max()) <= 4e-16 * scale  # the same step on every node, to rounding
    c = sim.node_state("c")
    assert torch.allclose(c, u - u.mean(dim=0, keepdim=True), rtol=0, atol=1e-13)  # the authors' steady state
    assert float(c.sum(dim=0).abs().max()) <= 1e-12
    # The zero start descends along each node's own gradient instead.
    zero = _simulator(settings, None)
    zero.step()
    assert torch.allclose(zero.X, x0 - settings.step_size * u, rtol=0, atol=1e-13)


def test_gossip_start_averages_for_k_rounds_then_descends_along_w_k_u() -> None:
    k = 6
    sim = _simulator(QUAD, AverageStart(k), track_flows=True)
    x0, u = sim.X.clone(), _first_momentum(sim)
    W = resolve_topology(QUAD).mixing_matrix(torch.float64)
    for _ in range(k):
        sim.step()
        assert torch.equal(sim.X, x0) and torch.equal(sim.node_state("u"), u)  # no descent, the momentum stays
        assert float(sim.node_state("c").sum(dim=0).abs().max()) <= 1e-12
    sim.step()  # the first descent
    y = torch.linalg.matrix_power(W, k) @ u
    assert torch.allclose(sim.X, x0 - QUAD.step_size * y, rtol=0, atol=1e-12)
    mean = u.mean(dim=0, keepdim=True)
    assert float((y - mean).norm()) < 0.3 * float((u - mean).norm())  # W^K u is on its way to the average
    for _ in range(1000 - k - 1):
        sim.step()
    problem = sim.task.problem  # type: ignore[attr-defined]
    assert problem.distance_to_optimum(sim.X) <= 1e-8  # still the exact optimum: the tracker invariant held
    assert float(sim.node_state("c").sum(dim=0).abs().max()) <= 1e-12


def test_crash_needs_a_gossip_start() -> None:
    with pytest.raises(SimulationError, match="not a sum of edge flows"):
        _simulator(QUAD, AverageStart(0), track_flows=True)
    with pytest.raises(SimulationError, match="tracking rules"):
        _simulator(dataclasses.replace(QUAD, algorithm="dsgdm"), AverageStart(2))


def test_settings_refuse_what_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tracking rules") as info:
        RunSettings(algorithm="dsgdm", tracker_init="average")
    assert info.value.key == "tracker_init"
    with pytest.raises(ConfigError, match="only with tracker_init") as info:
        RunSettings(tracker_init_rounds=5)
    assert info.value.key == "tracker_init_rounds"
    average = dataclasses.replace(QUAD, tracker_init="average", tracker_init_rounds=400)
    with pytest.raises(ConfigError, match="leave none of the run's 400 rounds"):
        tracker_start(average, 400)
    exact = dataclasses.replace(average, tracker_init_rounds=0)
    assert tracker_start(exact, 400) == AverageStart(0)
    with pytest.raises(ConfigError, match="only the simulator"):
        tracker_start(exact, 400, gossip_only=True)
    # A daemon's config names the run file that asks for the exact start.
    (tmp_path / "run.toml").write_text('dataset = "quadratic"\ntracker_init = "average"\n')
    (tmp_path / "node.toml").write_text('id = 0\nrun = "run.toml"\nlisten = "tcp://127.0.0.1:0"\n'
                                        'bootstrap = "tcp://127.0.0.1:1"\n')
    with pytest.raises(ConfigError, match="daemons average by gossip") as info:
        load_node_config(tmp_path / "node.toml")
    assert info.value.file == str(tmp_path / "run.toml") and info.value.key == "tracker_init_rounds"
    assert RunSettings().fingerprint() == RunSettings(tracker_init="zero").fingerprint()
