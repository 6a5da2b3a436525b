"""Step-size schedules: their shape, positivity, and the same step sizes in simulator and daemon."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from peernet.config import LATER_KEYS, RunSettings
from peernet.core.schedules import SCHEDULES, step_size_at
from peernet.errors import ConfigError
from peernet.node.results import final_params
from peernet.sim.protocol import run_protocol
from peernet.sim.run import run_simulation


def test_shapes() -> None:
    assert [step_size_at(0.1, t, 8) for t in range(8)] == [0.1] * 8
    cosine = [step_size_at(1.0, t, 100, schedule="cosine") for t in range(100)]
    assert cosine[0] == 1.0 and cosine == sorted(cosine, reverse=True) and 0 < cosine[-1] < 1e-3
    assert math.isclose(cosine[50], 0.5)
    step = [step_size_at(1.0, t, 100, schedule="step", decay=0.1) for t in range(100)]
    assert step[49] == 1.0 and math.isclose(step[50], 0.1) and math.isclose(step[75], 0.01)
    warm = [step_size_at(1.0, t, 100, schedule="cosine", warmup=4) for t in range(6)]
    assert warm[:4] == [0.25, 0.5, 0.75, 1.0] and warm[4] == 1.0 and warm[5] < 1.0  # then cosine over 96 rounds
    with pytest.raises(ConfigError):
        step_size_at(1.0, 0, 10, schedule="linear")


@given(st.sampled_from(SCHEDULES), st.integers(0, 5000), st.integers(1, 5000), st.integers(0, 100))
def test_always_positive_and_at_most_the_base(schedule: str, t: int, total: int, warmup: int) -> None:
    eta = step_size_at(0.05, min(t, total - 1), total, schedule=schedule, warmup=warmup)
    assert 0 < eta <= 0.05


def test_default_settings_keep_their_fingerprint() -> None:
    """Runs of earlier versions (no schedule keys) must still resume: defaults leave the fingerprint alone."""
    data = dataclasses.asdict(RunSettings())
    data.pop("data_dir")
    for key in LATER_KEYS:
        data.pop(key)
    old = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    assert RunSettings().fingerprint() == old
    assert RunSettings(schedule="cosine").fingerprint() != old


def test_simulator_and_daemons_take_the_same_steps(tmp_path: Path) -> None:
    settings = RunSettings(algorithm="momentum-tracking", topology="ring", nodes=6, dataset="quadratic",
                           heterogeneity=3.0, rounds=150, schedule="cosine", warmup_rounds=10, seed=2)
    run_simulation(settings, tmp_path / "sim", progress=False)
    run_protocol(settings, tmp_path / "daemons", progress=False)  # the daemon's own code, deterministic
    x_sim = torch.load(tmp_path / "sim" / "final_params.pt", weights_only=True)["params"]
    x_daemons = final_params({i: tmp_path / "daemons" / "nodes" / f"node{i}" for i in range(6)})
    assert float((x_sim - x_daemons).abs().max()) <= 1e-12
    constant = dataclasses.replace(settings, schedule="constant", warmup_rounds=0)
    run_simulation(constant, tmp_path / "constant", progress=False)
    x_constant = torch.load(tmp_path / "constant" / "final_params.pt", weights_only=True)["params"]
    assert float((x_sim - x_constant).abs().max()) > 1e-6  # the schedule did change the run
