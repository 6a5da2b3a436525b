"""A sweep cell whose summary was computed with other resolved settings is refused by report and run again.

Cell ids hash the settings as written, so a changed study file gives new cells; what they cannot see is how a
setting resolved (a default step size of another peernet version): the summary's settings digest does.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from peernet.cli import main
from peernet.study.grid import load_study
from peernet.study.sweep import run_sweep

STUDY = """
name = "stale"
[base]
dataset = "quadratic"
nodes = 4
rounds = 10
[grid]
algorithm = ["momentum-tracking", "dsgdm"]
"""


def test_a_cell_with_another_digest_is_refused_then_rerun(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    out = tmp_path / "sweep"
    first = run_sweep(load_study(path), out, progress=False)
    stale, kept = first.ran
    summary = out / "cells" / stale / "summary.json"
    summary.write_text(json.dumps(json.loads(summary.read_text()) | {"settings_digest": "0" * 16}))
    res = CliRunner().invoke(main, ["report", str(out)])
    assert res.exit_code == 2 and "summary.json was written by another run than sweep.json describes" in res.output
    second = run_sweep(load_study(path), out, progress=False)
    assert second.ran == [stale] and second.skipped == [kept]
    res = CliRunner().invoke(main, ["report", str(out)])
    assert res.exit_code == 0, res.output
