"""`peernet local` (real daemons, real sockets) ends where `peernet simulate` ends, with the same settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peernet.endpoint_file import read_endpoint
from peernet.node.results import final_params
from tests.clusters import last_json, run_cli


def _local(tmp_path: Path, name: str, args: list[str]) -> tuple[dict, torch.Tensor]:
    out = tmp_path / name
    res = run_cli(["local", *args, "--out", str(out), "--json", "--quiet", "--checkpoint-every", "5"])
    assert res.returncode == 0, res.stdout + res.stderr
    summary = last_json(res.stdout)
    n = summary["nodes"]
    return summary, final_params({i: out / "nodes" / f"node{i}" for i in range(n)})


def _simulate(tmp_path: Path, name: str, args: list[str], mode: str = "vectorized") -> tuple[dict, torch.Tensor]:
    out = tmp_path / name
    res = run_cli(["simulate", *args, "--out", str(out), "--json", "--quiet", "--mode", mode])
    assert res.returncode == 0, res.stdout + res.stderr
    return last_json(res.stdout), torch.load(out / "final_params.pt", weights_only=True)["params"]


@pytest.mark.parametrize("transport", ["tcp", "ipc"])  # ipc is the default (auto) for short run paths
def test_quadratic_same_parameters_and_distance(tmp_path: Path, transport: str) -> None:
    args = ["--dataset", "quadratic", "--nodes", "4", "--topology", "ring", "--rounds", "300", "--heterogeneity", "3"]
    loc, x_loc = _local(tmp_path, "local", [*args, "--transport", transport])
    endpoints = [read_endpoint(tmp_path / "local" / "nodes" / f"node{i}") or "" for i in range(4)]
    assert all(e.startswith(f"{transport}://") for e in endpoints), endpoints
    sim, x_sim = _simulate(tmp_path, "sim", args)
    assert loc["finished_nodes"] == 4 and loc["rounds"] == 300
    assert float((x_loc - x_sim).abs().max()) <= 1e-5
    assert loc["distance_to_optimum"] == pytest.approx(sim["distance_to_optimum"], rel=1e-6)
    assert set(sim) & {"algorithm", "nodes", "rounds", "wall_seconds", "mean_test_accuracy",
                       "averaged_model_test_accuracy", "consensus_distance"} <= set(loc)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["momentum-tracking"])  # a rule without a tracker: tests/sim/test_protocol.py
def test_lenet_same_parameters(tmp_path: Path, algorithm: str) -> None:
    args = ["--algorithm", algorithm, "--dataset", "fashion-mnist", "--model", "lenet", "--nodes", "4",
            "--topology", "ring", "--rounds", "12", "--batch-size", "32", "--lr", "0.01", "--eval-samples", "500"]
    # The per-node loop computes exactly like a daemon, so float32 is compared against it, bit for bit up to
    # 1e-6. (The vectorised engine is checked against that loop in float64, where its grouped convolutions'
    # other summation order cannot flip ReLU/max-pool decisions: tests/sim/test_equivalence.py.)
    loc32, x_loc32 = _local(tmp_path, "local32", args)
    _, x_loop32 = _simulate(tmp_path, "loop32", args, mode="loop")
    assert float((x_loc32 - x_loop32).abs().max()) <= 1e-6
    assert loc32["mean_test_accuracy"] is not None
