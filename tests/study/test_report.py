"""`peernet report` on a sweep, a `peernet simulate --out` directory and a daemon run directory."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from peernet.cli.study_cmd import report, sweep
from peernet.config import RunSettings
from peernet.metrics.jsonl import read_jsonl
from peernet.sim.run import run_simulation
from peernet.study.report import heterogeneity

IMAGE_STUDY = """
name = "tiny-fmnist"
[base]
dataset = "fashion-mnist"
model = "mlp"
nodes = 4
rounds = 5
eval_samples = 200
batch_size = 16
[grid]
algorithm = ["momentum-tracking", "dsgdm"]
heterogeneity = [{partition = "dirichlet", alpha = 0.1}, {partition = "classes", classes_per_node = 2}]
"""


def _rows(table: str) -> list[list[str]]:
    lines = [line for line in table.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def _pngs(directory: Path, names: tuple[str, ...]) -> None:
    for name in names:
        path = directory / name
        assert path.is_file() and path.stat().st_size > 1000, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_image_sweep_end_to_end_then_report(tmp_path: Path) -> None:
    (tmp_path / "study.toml").write_text(IMAGE_STUDY)
    out = tmp_path / "sweep"
    res = CliRunner().invoke(sweep, ["--config", str(tmp_path / "study.toml"), "--out", str(out), "--jobs", "1",
                                     "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["finished"] == 4
    assert "sweep tiny-fmnist: 4/4 cells" in res.output  # the progress line

    res = CliRunner().invoke(report, [str(out), "--json"])
    assert res.exit_code == 0, res.output
    text = (out / "report.md").read_text()
    rows = _rows(text)
    assert len(rows) == 4
    header = [c.strip() for c in text.split("| algorithm |")[1].splitlines()[0].strip("|").split("|")]
    assert header[:4] == ["heterogeneity", "lr", "seeds", "mean test acc (%)"]
    for row in rows:
        assert row[0] in ("momentum-tracking", "dsgdm") and row[2] == "0.005" and row[3] == "1"
        assert all(re.fullmatch(r"\d+\.\d\d", v) for v in row[4:6]), row
    assert {row[1] for row in rows} == {"dirichlet α=0.1", "classes k=2"}
    _pngs(out, ("accuracy.png", "heterogeneity.png", "consensus.png"))
    payload = json.loads(res.output.strip().splitlines()[-1])
    assert payload["kind"] == "sweep" and len(payload["rows"]) == 4
    assert all(0 <= r["mean_test_accuracy"]["mean"] <= 1 for r in payload["rows"])


METHOD_STUDY = """
name = "tiny-methods"
[base]
dataset = "quadratic"
nodes = 4
rounds = 20
[grid]
method = [{algorithm = "momentum-tracking", lr = 0.05}, {algorithm = "dsgdm", lr = 0.02}]
"""


def _sweep_and_report(tmp_path: Path, study: str) -> tuple[Path, list[dict[str, Any]]]:
    """Sweep ``study`` in one process, report it; the sweep directory and the report's rows."""
    (tmp_path / "study.toml").write_text(study)
    out = tmp_path / "sweep"
    res = CliRunner().invoke(sweep, ["--config", str(tmp_path / "study.toml"), "--out", str(out), "--jobs", "1"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(report, [str(out), "--json"])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.output.strip().splitlines()[-1])["rows"]


def test_an_axis_that_sets_the_algorithm_is_the_method_not_a_setting(tmp_path: Path) -> None:
    """Each method at its own step size (the headline run): one row per method, both lines in one panel."""
    out, rows = _sweep_and_report(tmp_path, METHOD_STUDY)
    header = [c.strip() for c in (out / "report.md").read_text().split("| algorithm |")[1].splitlines()[0]
              .strip("|").split("|")]
    assert header[0] == "lr" and "method" not in header
    assert {(r["algorithm"], tuple(r["lr"])) for r in rows} == {("momentum-tracking", (0.05,)), ("dsgdm", (0.02,))}
    assert all(r["labels"] == {} for r in rows)  # one setting: both methods are compared in the same panel

    # The same algorithm twice (two step sizes): the axis tells them apart, they are never averaged as seeds.
    (tmp_path / "study2.toml").write_text(METHOD_STUDY.replace('lr = 0.02}]', 'lr = 0.02}, {algorithm = "dsgdm", '
                                                                             'lr = 0.05}]'))
    out2 = tmp_path / "sweep2"
    res = CliRunner().invoke(sweep, ["--config", str(tmp_path / "study2.toml"), "--out", str(out2), "--jobs", "1"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(report, [str(out2), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output.strip().splitlines()[-1])["rows"]
    assert sorted((r["algorithm"], tuple(r["lr"]), r["seeds"]) for r in rows) == [
        ("dsgdm", (0.02,), 1), ("dsgdm", (0.05,), 1), ("momentum-tracking", (0.05,), 1)]


def test_one_algorithm_twice_apart_from_its_step_size_is_two_methods(tmp_path: Path) -> None:
    """Momentum Tracking from both starts: two methods, named apart, in one panel, each with its 95% interval."""
    study = METHOD_STUDY.replace('method = [{algorithm = "momentum-tracking", lr = 0.05}, {algorithm = "dsgdm", lr = '
                                 '0.02}]', 'method = [{algorithm = "momentum-tracking"}, {algorithm = '
                                 '"momentum-tracking", tracker_init = "average"}]\nseed = [0, 1]')
    _, rows = _sweep_and_report(tmp_path, study)
    assert sorted((r["algorithm"], r["seeds"]) for r in rows) == [
        ("momentum-tracking", 2), ("momentum-tracking (tracker_init=average)", 2)]
    assert all(r["labels"] == {} for r in rows)  # one setting, one panel
    stats = rows[0]["distance_to_optimum"]
    assert stats["ci_low"] < stats["mean"] < stats["ci_high"]


def test_report_on_a_simulate_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    settings = RunSettings(dataset="fashion-mnist", model="mlp", nodes=4, rounds=5, eval_samples=200, batch_size=16)
    summary = run_simulation(settings, run, progress=False)
    dest = tmp_path / "report"
    res = CliRunner().invoke(report, [str(run), "--out", str(dest)])
    assert res.exit_code == 0, res.output
    (row,) = _rows((dest / "report.md").read_text())
    assert row[:5] == ["momentum-tracking", "ring-4", "fashion-mnist classes k=2", "0.005", "1"]
    assert row[5] == f"{summary['mean_test_accuracy'] * 100:.2f}"
    _pngs(dest, ("accuracy.png", "consensus.png"))
    assert not (dest / "heterogeneity.png").exists()  # sweeps only


def test_a_long_run_also_gets_the_mean_of_its_last_evaluations(tmp_path: Path) -> None:
    """10 evaluations or more: the mean test accuracy over the last 5 is a column; a short run has none."""
    run = tmp_path / "run"
    settings = RunSettings(dataset="fashion-mnist", model="mlp", nodes=4, rounds=12, eval_every=1, eval_samples=200,
                           batch_size=16)
    summary = run_simulation(settings, run, progress=False)
    evals = [r["mean_test_accuracy"] for r in read_jsonl(run / "metrics.jsonl") if r.get("event") == "eval"]
    assert len(evals) >= 10 and evals[-1] == summary["mean_test_accuracy"]
    res = CliRunner().invoke(report, [str(run), "--out", str(tmp_path / "report"), "--json"])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "report" / "report.md").read_text()
    header = [c.strip() for c in text.split("| algorithm |")[1].splitlines()[0].strip("|").split("|")]
    assert header[4:6] == ["mean test acc (%)", "mean test acc, last 5 evals (%)"]
    (row,) = json.loads(res.output.strip().splitlines()[-1])["rows"]
    assert row["late_mean_test_accuracy"]["mean"] == pytest.approx(sum(evals[-5:]) / 5, abs=1e-12)
    assert _rows(text)[0][6] == f"{sum(evals[-5:]) / 5 * 100:.2f}"

    short = tmp_path / "short"
    run_simulation(dataclasses.replace(settings, rounds=8), short, progress=False)
    res = CliRunner().invoke(report, [str(short), "--out", str(tmp_path / "short-report")])
    assert res.exit_code == 0, res.output
    assert "last 5 evals" not in (tmp_path / "short-report" / "report.md").read_text()


def test_report_on_a_daemon_run_directory(tmp_path: Path) -> None:
    """The `peernet local` layout (also what collecting the nodes' state from several hosts gives)."""
    run = tmp_path / "local"
    (run / "run.toml").parent.mkdir()
    (run / "run.toml").write_text('algorithm = "dsgdm"\ndataset = "fashion-mnist"\npartition = "dirichlet"\n'
                                  'alpha = 0.5\ntopology = "topology.toml"\nlr = 0.01\n')
    (run / "summary.json").write_text(json.dumps({"algorithm": "dsgdm", "topology": "ring-2", "lr": 0.01,
                                                  "mean_test_accuracy": 0.5, "averaged_model_test_accuracy": 0.6}))
    for node, accs in ((0, (0.2, 0.4)), (1, (0.3, 0.6))):
        d = run / "nodes" / f"node{node}"
        d.mkdir(parents=True)
        lines = [{"event": "round", "round": 1, "loss": 2.0}]
        lines += [{"event": "eval", "round": 5 * (i + 1), "epoch": 0.5 * (i + 1), "test_accuracy": a,
                   "consensus_distance": 0.1 / (i + 1)} for i, a in enumerate(accs)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    res = CliRunner().invoke(report, [str(run), "--json"])
    assert res.exit_code == 0, res.output
    (row,) = _rows((run / "report.md").read_text())
    assert row == ["dsgdm", "ring-2", "fashion-mnist dirichlet α=0.5", "0.01", "1", "50.00", "60.00"]
    _pngs(run, ("accuracy.png", "consensus.png"))
    assert json.loads(res.output.strip().splitlines()[-1])["kind"] == "daemons"


def test_report_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    res = CliRunner().invoke(report, [str(tmp_path)])
    assert res.exit_code == 2 and "not a sweep" in res.output


@pytest.mark.parametrize(("order", "settings"), [
    ([2, 4, 10], [{"partition": "classes", "classes_per_node": k} for k in (10, 2, 4)]),
    ([0.1, 1.0, 10.0], [{"partition": "dirichlet", "alpha": a} for a in (1.0, 10.0, 0.1)]),
])
def test_heterogeneity_axis_goes_from_most_to_least_heterogeneous(order: list[float],
                                                                  settings: list[dict[str, object]]) -> None:
    ranked = sorted(heterogeneity(s) for s in settings)
    assert [p[1] for p in ranked] == order
