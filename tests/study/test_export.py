"""`peernet report --csv / --tensorboard`: per-round metrics of simulate and daemon run directories."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from peernet.cli import main
from peernet.errors import ConfigError
from peernet.metrics.tfevents import read_events
from peernet.study.export import export_rows, write_tensorboard


def test_report_exports_a_simulate_run_as_csv_and_tensorboard(tmp_path: Path) -> None:
    run, table, board = tmp_path / "sim", tmp_path / "rounds.csv", tmp_path / "tb"
    res = CliRunner().invoke(main, ["simulate", "--dataset", "quadratic", "--nodes", "4", "--rounds", "20",
                                    "--quiet", "--out", str(run)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["report", str(run), "--csv", str(table), "--tensorboard", str(board)])
    assert res.exit_code == 0 and "exported 20 rows" in res.output, res.output
    with table.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["round"]) for r in rows] == list(range(1, 21)) and {r["node"] for r in rows} == {""}
    assert list(rows[0])[:4] == ["run", "node", "round", "epoch"] and float(rows[-1]["distance_to_optimum"]) > 0
    (events,) = board.glob("events.out.tfevents.*")
    steps = {e.step: e.scalars for e in read_events(events)[1:]}
    assert sorted(steps) == list(range(1, 21)) and steps[20]["loss"] == pytest.approx(float(rows[-1]["loss"]))


def test_daemon_runs_export_one_row_per_node_and_round(tmp_path: Path) -> None:
    run = tmp_path / "run"
    records = {0: [{"event": "start", "round": 0}, {"event": "round", "round": 1, "loss": 3.0, "bytes_out": 10},
                   {"event": "round", "round": 2, "loss": 9.0, "time": 5.0},
                   {"event": "round", "round": 2, "loss": 2.0, "time": 7.0},  # redone after a rejoin: this one counts
                   {"event": "eval", "round": 2, "test_accuracy": 0.5, "params": [1.0]}],
               1: [{"event": "round", "round": 1, "loss": 4.0, "finished": True}]}
    for node, recs in records.items():
        (run / "nodes" / f"node{node}").mkdir(parents=True)
        (run / "nodes" / f"node{node}" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert list(export_rows(run)) == [
        {"run": "run", "node": "0", "round": 1, "loss": 3.0, "bytes_out": 10},
        {"run": "run", "node": "0", "round": 2, "loss": 2.0, "time": 7.0, "test_accuracy": 0.5},
        {"run": "run", "node": "1", "round": 1, "loss": 4.0}]
    files = write_tensorboard(run, tmp_path / "tb")
    assert [f.parent.name for f in files] == ["node0", "node1"]
    last = read_events(files[0])[-1]
    assert (last.step, last.wall_time, last.scalars) == (2, 7.0, {"loss": 2.0, "test_accuracy": 0.5})
    with pytest.raises(ConfigError, match="not a sweep"):
        list(export_rows(tmp_path / "tb"))
