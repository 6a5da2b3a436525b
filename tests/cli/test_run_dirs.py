"""--out of `simulate` (and `local`): refused with files in it unless --force; `report` never mixes two runs."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from peernet import __version__
from peernet.cli import main
from tests.test_rundir import tree

SIMULATE = ["simulate", "--dataset", "quadratic", "--nodes", "4", "--rounds", "20", "--quiet", "--json"]


def invoke(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(main, args)
    assert "Traceback" not in res.output
    return res.exit_code, res.output


def test_a_used_out_is_refused_and_force_replaces_the_old_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "nodes" / "node7").mkdir(parents=True)  # what an earlier, bigger run left
    (out / "summary.json").write_text(json.dumps({"algorithm": "dsgd", "lr": 0.5}))
    before = tree(out)
    for command in (SIMULATE, ["local", "--dataset", "quadratic", "--nodes", "3"]):
        code, output = invoke([*command, "--out", str(out)])
        assert code == 2 and "is not empty (nodes, summary.json)" in output and "--force" in output, output
        assert tree(out) == before

    code, output = invoke([*SIMULATE, "--out", str(out), "--force"])
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == ["final_params.pt", "metrics.jsonl", "run.lock", "settings.json",
                                                     "summary.json"]
    settings = json.loads((out / "settings.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert settings["lr"] == 0.05 and settings["dtype"] == "float64"  # resolved, not null
    assert settings["peernet_version"] == __version__ and "git_commit" in settings
    assert summary["settings_digest"] == settings["settings_digest"] and summary["algorithm"] == "momentum-tracking"
    code, output = invoke(["report", str(out), "--json"])
    assert code == 0, output


def test_report_refuses_a_summary_left_by_another_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = invoke([*SIMULATE, "--out", str(out)])
    assert code == 0, output
    good = json.loads((out / "summary.json").read_text())
    for change, phrase in (({"algorithm": "dsgd"}, "algorithm 'dsgd' in summary.json, 'momentum-tracking' in "
                                                   "settings.json"),
                           ({"lr": 0.01}, "lr 0.01 in summary.json, 0.05 in settings.json"),
                           ({"settings_digest": "0" * 16}, "seed, rounds, β or another setting differs")):
        (out / "summary.json").write_text(json.dumps(good | change))
        code, output = invoke(["report", str(out)])
        assert code == 2 and "summary.json was written by another run" in output and phrase in output, output
        assert not (out / "report.md").exists()


def test_report_refuses_a_daemon_directory_with_another_run_in_it(tmp_path: Path) -> None:
    """The symptom: a failed MT rerun into an old DSGD directory gave a "dsgd" row; fewer nodes kept old nodes."""
    run = tmp_path / "local"
    (run / "nodes" / "node0").mkdir(parents=True)
    (run / "nodes" / "node0" / "metrics.jsonl").write_text('{"event": "round", "round": 1, "loss": 1.0}\n')
    (run / "run.toml").write_text('algorithm = "momentum-tracking"\ndataset = "quadratic"\nnodes = 1\n')
    (run / "summary.json").write_text(json.dumps({"algorithm": "dsgd", "dataset": "quadratic", "lr": 0.05}))
    code, output = invoke(["report", str(run)])
    assert code == 2 and "algorithm 'dsgd' in summary.json, 'momentum-tracking' in run.toml" in output, output

    (run / "summary.json").unlink()
    (run / "settings.json").write_text(json.dumps({"algorithm": "momentum-tracking", "nodes": 1,
                                                   "settings_digest": "x"}))
    (run / "nodes" / "node3").mkdir()
    code, output = invoke(["report", str(run)])
    assert code == 2 and "nodes/{node3} are not nodes of this 1-node run" in output, output
