"""`peernet sweep --backend ray`: the same results directory as the local backend, on a real local Ray instance."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from peernet.cli.study_cmd import sweep
from peernet.errors import ConfigError
from peernet.metrics.jsonl import read_jsonl
from peernet.study.grid import load_study
from peernet.study.ray_backend import placement
from peernet.study.sweep import run_sweep

# Halving on the quadratic task: shorter rungs, the full budget and a second seed, so every phase runs on Ray.
STUDY = """
name = "on-ray"
[base]
dataset = "quadratic"
nodes = 4
rounds = 8
[grid]
algorithm = ["momentum-tracking"]
lr = [0.2, 0.05, 0.01]
seed = [0, 1]
[selection]
tune = "lr"
metric = "averaged_model_loss"
method = "halving"
budgets = [2]
unit = "rounds"
keep = 0.5
"""
# What differs from run to run or with the machine's share of cores; everything else must be equal.
UNSTEADY = {"wall_seconds", "train_seconds", "peak_rss_mb", "threads", "mode"}


def test_an_address_where_no_cluster_answers_fails_fast_and_writes_nothing(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'peernet[ray]')")
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    out = tmp_path / "out"
    # Before the module's Ray instance starts: a driver already joined to a cluster would keep that one.
    res = CliRunner().invoke(sweep, ["--config", str(path), "--out", str(out), "--backend", "ray",
                                     "--address", "127.0.0.1:1"])
    assert res.exit_code == 2 and "--address" in res.output and "no Ray cluster answers" in res.output
    assert not out.exists()


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'peernet[ray]')")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _cells(out: Path) -> dict[str, dict[str, Any]]:
    """Per cell: its summary without the unsteady keys, and its other files byte for byte."""
    found = {}
    for cell in sorted((out / "cells").iterdir()):
        summary = json.loads((cell / "summary.json").read_text())
        files = {p.name: p.read_bytes() for p in cell.iterdir() if p.name != "summary.json"}
        found[cell.name] = {"summary": {k: v for k, v in summary.items() if k not in UNSTEADY}, "files": files}
    return found


def test_a_sweep_on_ray_writes_what_the_local_backend_writes(tmp_path: Path, ray_instance: Any) -> None:
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert not run_sweep(load_study(path), local, jobs=1, threads=1, progress=False).interrupted

    first = run_sweep(load_study(path), remote, backend="ray", limit=2, progress=False)  # interrupted ...
    assert first.interrupted and len(first.ran) == 2
    res = CliRunner().invoke(sweep, ["--config", str(path), "--out", str(remote), "--backend", "ray", "--json"])
    assert res.exit_code == 0, res.output
    done = json.loads(res.output.strip().splitlines()[-1])  # ... and resumed: finished cells are not rerun
    assert sorted(done["skipped"]) == sorted(first.ran) and done["finished"] == done["total"] == 5
    assert "sweep on-ray: 5/5 cells" in res.output  # the progress line

    assert _cells(remote) == _cells(local)
    assert (remote / "selection.json").read_text() == (local / "selection.json").read_text()
    assert (remote / "sweep.json").read_text() == (local / "sweep.json").read_text()
    lines = {line["cell"]: line for line in read_jsonl(remote / "results.jsonl")}
    assert set(lines) == {line["cell"] for line in read_jsonl(local / "results.jsonl")}
    assert ray_instance.is_initialized()  # the sweep used the test's instance and left it running


def test_without_ray_the_backend_is_a_usage_error_naming_the_extra(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is not installed
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    out = tmp_path / "out"
    res = CliRunner().invoke(sweep, ["--config", str(path), "--out", str(out), "--backend", "ray"])
    assert res.exit_code == 2 and "peernet[ray]" in res.output and not out.exists()
    res = CliRunner().invoke(sweep, ["--config", str(path), "--out", str(out), "--address", "10.0.0.1:6379"])
    assert res.exit_code == 2 and "--backend ray" in res.output and not out.exists()


@pytest.mark.parametrize(("device", "gpus", "placed"), [
    ("auto", 0, ("cpu", 0)), ("auto", 2, ("cuda", 1)), ("cpu", 2, ("cpu", 0)), ("cuda", 1, ("cuda", 1)),
    ("cuda:1", 4, ("cuda", 1)),  # Ray shows a task its one GPU only: inside the task it is cuda
])
def test_a_cuda_cell_reserves_a_gpu(device: str, gpus: int, placed: tuple[str, int]) -> None:
    assert placement(device, gpus) == placed


@pytest.mark.parametrize(("device", "gpus", "reason"), [("cuda", 0, "no GPU"), ("tpu", 1, "not auto, cpu")])
def test_an_impossible_device_is_refused(device: str, gpus: int, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        placement(device, gpus)
    assert info.value.key == "device" and reason in info.value.reason
