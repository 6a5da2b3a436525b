"""Successive halving in `peernet sweep`: rungs, survivors, the reasons recorded, resumption, bad rules refused."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from peernet.cli.study_cmd import sweep
from peernet.errors import ConfigError
from peernet.metrics.jsonl import read_jsonl
from peernet.study.grid import load_study
from peernet.study.report import write_report
from peernet.study.selection import keep_count
from peernet.study.sweep import run_sweep

HALVING = """
name = "halving"
[base]
dataset = "quadratic"
nodes = 4
rounds = 12
[grid]
algorithm = ["momentum-tracking", "dsgdm"]
lr = [0.2, 0.1, 0.02, 0.002]
seed = [0, 1]
[selection]
tune = "lr"
metric = "averaged_model_loss"
method = "halving"
budgets = [2, 4]
unit = "rounds"
keep = "1/2"
"""


def _study(tmp_path: Path, text: str = HALVING) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_rungs_keep_the_best_fraction_and_record_why(tmp_path: Path) -> None:
    study = load_study(_study(tmp_path))
    out = tmp_path / "sweep"
    first = run_sweep(study, out, limit=5, progress=False)  # stops inside the first rung, as Ctrl-C would
    assert first.interrupted and not (out / "selection.json").exists()
    result = run_sweep(study, out, progress=False)
    # Per algorithm: 4 step sizes for 2 rounds, the best 2 for 4 rounds, the best for 12, then seed 1 at it.
    assert result.total == 2 * (4 + 2 + 1 + 1) and result.finished == result.total and not result.failed
    assert sorted(result.skipped) == sorted(first.ran)
    selection = json.loads((out / "selection.json").read_text())
    assert selection["method"] == "halving" and selection["budgets"] == [2, 4] and selection["keep"] == 0.5
    summaries = {line["cell"]: line["summary"] for line in read_jsonl(out / "results.jsonl")}
    for choice in selection["choices"]:
        rungs = choice["rungs"]
        assert [(r["budget"], r["unit"], len(r["candidates"])) for r in rungs] == [(2, "rounds", 4), (4, "rounds", 2),
                                                                                   (12, "rounds", 1)]
        for rung, after in itertools.pairwise(rungs):
            scores = sorted((c["metric"], i) for i, c in enumerate(rung["candidates"]))  # lower loss is better
            best = [rung["candidates"][i]["value"] for _, i in scores[:2 if rung is rungs[0] else 1]]
            assert rung["kept"] == best == [c["value"] for c in after["candidates"]]
            for c in rung["candidates"]:  # each score is the rung cell's own, at the rung's budget
                assert summaries[c["cell"]]["rounds"] == rung["budget"]
                assert summaries[c["cell"]]["averaged_model_loss"] == c["metric"]
        assert rungs[-1]["kept"] == [choice["chosen"]] and choice["chosen_cell"] == rungs[-1]["candidates"][0]["cell"]
    plan = json.loads((out / "sweep.json").read_text())["cells"]
    assert sum(c["phase"] == "rung" for c in plan) == 12 and sum(c["phase"] == "final" for c in plan) == 2
    finals = {c["settings"]["algorithm"]: c["labels"]["lr"] for c in plan if c["phase"] == "final"}
    assert finals == {c["group"]["algorithm"]: c["chosen"] for c in selection["choices"]}

    again = run_sweep(study, out, progress=False)  # resuming repeats the same decisions and runs nothing
    assert again.ran == [] and json.loads((out / "selection.json").read_text()) == selection
    report = write_report(out)
    text = (out / "report.md").read_text()
    assert "## Step-size selection" in text and "successive halving" in text and "keeping the best 1/2" in text
    assert "| 2 rounds |" in text and "(chosen)" in text
    assert [row["seeds"] for row in report["rows"]] == [2, 2]  # the chosen step size on both seeds, no rung cells
    assert report["selection"] == selection["choices"]


@pytest.mark.parametrize(("n", "keep", "kept"), [(4, 0.5, 2), (3, 1 / 3, 1), (9, 1 / 3, 3), (2, 1 / 3, 1), (5, 0.5, 2)])
def test_keep_count_rounds_down_but_keeps_one(n: int, keep: float, kept: int) -> None:
    assert keep_count(n, keep) == kept


@pytest.mark.parametrize(("change", "key", "reason"), [
    (("budgets = [2, 4]", "budgets = [4, 2]"), "selection.budgets", "increase"),
    (("budgets = [2, 4]", "budgets = [2, 40]"), "selection.budgets", "longer than the cell's own 12 rounds"),
    (("budgets = [2, 4]", "budgets = [2, 4.5]"), "selection.budgets", "whole numbers of rounds"),
    (('unit = "rounds"', 'unit = "epochs"'), "selection.unit", 'set unit = "rounds"'),
    (('keep = "1/2"', "keep = 1.5"), "selection.keep", "between 0 and 1"),
    (('method = "halving"', 'method = "bandit"'), "selection.method", "halving"),
    (('method = "halving"', 'method = "full"'), "selection.budgets", 'only with method = "halving"'),
    (('dataset = "quadratic"', 'dataset = "fashion-mnist"\nval_fraction = 0.1'), "selection.metric",
     "quadratic task's objective"),
])
def test_bad_halving_rules_are_refused_before_anything_runs(tmp_path: Path, change: tuple[str, str], key: str,
                                                            reason: str) -> None:
    path = _study(tmp_path, HALVING.replace(*change))
    with pytest.raises(ConfigError) as info:
        load_study(path)
    assert info.value.key == key and reason in info.value.reason
    res = CliRunner().invoke(sweep, ["--config", str(path), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and key in res.output and not (tmp_path / "out").exists()
