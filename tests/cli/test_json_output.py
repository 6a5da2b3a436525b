"""``--json`` means JSON only on stdout, for every command that has the option (human text goes to stderr)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from peernet.cli import main


def _stdout_is_one_json_object(args: list[str]) -> dict:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout has more than the JSON:\n{res.stdout}"
    return json.loads(lines[0])


def test_simulate_sweep_and_report_print_only_json_on_stdout(tmp_path: Path) -> None:
    summary = _stdout_is_one_json_object(["simulate", "--dataset", "quadratic", "--rounds", "20", "--quiet",
                                          "--json", "--out", str(tmp_path / "sim")])
    assert summary["rounds"] == 20
    study = tmp_path / "study.toml"
    study.write_text('name = "s"\n[base]\ndataset = "quadratic"\nrounds = 20\n[grid]\nalgorithm = ["dsgd", "dsgdm"]\n')
    ran = _stdout_is_one_json_object(["sweep", "--config", str(study), "--out", str(tmp_path / "sw"), "--jobs", "1",
                                      "--quiet", "--json"])
    assert ran["finished"] == 2
    rows = _stdout_is_one_json_object(["report", str(tmp_path / "sw"), "--json"])
    assert rows["rows"]


def test_topology_check_prints_only_json_on_stdout(tmp_path: Path) -> None:
    topo = tmp_path / "ring.toml"
    CliRunner().invoke(main, ["topology", "generate", "ring", "--nodes", "6", "-o", str(topo)])
    report = _stdout_is_one_json_object(["topology", "check", str(topo), "--json"])
    assert report
