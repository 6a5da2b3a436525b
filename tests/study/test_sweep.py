"""`peernet sweep`: validation before anything runs, resumption, step-size selection, Ctrl-C with workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from peernet.cli.study_cmd import sweep
from peernet.errors import ConfigError
from peernet.metrics.jsonl import read_jsonl
from peernet.study.grid import load_study
from peernet.study.sweep import run_sweep

QUADRATIC = """
name = "quad"
[base]
dataset = "quadratic"
nodes = 4
rounds = {rounds}
[grid]
algorithm = ["momentum-tracking", "dsgdm"]
heterogeneity = [1.0, 3.0]
"""

SELECTION = """
name = "select"
[base]
dataset = "fashion-mnist"
model = "mlp"
nodes = 4
rounds = 10
eval_samples = 200
batch_size = 16
val_fraction = 0.2
[grid]
algorithm = ["momentum-tracking"]
lr = [1e-9, 0.05]
seed = [0, 1]
[selection]
tune = "lr"
on_seed = 0
metric = "mean_val_accuracy"
"""


def _write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _stamps(cell_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in cell_dir.iterdir()}


def test_resume_skips_finished_cells_and_reruns_the_rest(tmp_path: Path) -> None:
    study = load_study(_write(tmp_path, QUADRATIC.format(rounds=50)))
    out = tmp_path / "sweep"
    first = run_sweep(study, out, limit=2, progress=False)  # the test hook: stop after 2 cells, like Ctrl-C
    assert first.interrupted and len(first.ran) == 2 and first.total == 4
    done = {cid: _stamps(out / "cells" / cid) for cid in first.ran}
    (out / "cells" / "left-over.partial").mkdir()  # what a killed run leaves behind

    second = run_sweep(study, out, progress=False)
    assert not second.interrupted
    assert sorted(second.skipped) == sorted(first.ran)
    assert len(second.ran) == 2 and not set(second.ran) & set(first.ran)
    assert {cid: _stamps(out / "cells" / cid) for cid in first.ran} == done  # not touched
    assert not (out / "cells" / "left-over.partial").exists()
    assert len(read_jsonl(out / "results.jsonl")) == 4

    # A cell without its summary is unfinished: only that one runs again.
    victim = second.ran[0]
    (out / "cells" / victim / "summary.json").unlink()
    kept = {cid: _stamps(out / "cells" / cid) for cid in first.ran}
    res = CliRunner().invoke(sweep, ["--config", study.source, "--out", str(out), "--jobs", "1", "--quiet",
                                     "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    assert report["ran"] == [victim] and len(report["skipped"]) == 3
    assert "3 cells already finished, running 1" in res.output
    assert {cid: _stamps(out / "cells" / cid) for cid in first.ran} == kept
    plan = json.loads((out / "sweep.json").read_text())
    assert len(plan["cells"]) == 4 and {c["phase"] for c in plan["cells"]} == {"grid"}
    lines = read_jsonl(out / "results.jsonl")
    assert sorted(line["cell"] for line in lines) == sorted(c["id"] for c in plan["cells"])
    assert all(line["summary"]["distance_to_optimum"] is not None for line in lines)


def test_selection_picks_the_best_step_size_on_seed_zero(tmp_path: Path) -> None:
    study = load_study(_write(tmp_path, SELECTION))
    out = tmp_path / "sweep"
    result = run_sweep(study, out, progress=False)
    assert result.total == 3 and len(result.ran) == 3  # 2 step sizes on seed 0, then seed 1 at the choice
    selection = json.loads((out / "selection.json").read_text())
    (choice,) = selection["choices"]
    assert choice["chosen"] == "0.05"
    scores = {c["value"]: c["metric"] for c in choice["candidates"]}
    assert scores["0.05"] > scores["1e-09"]
    cells = json.loads((out / "sweep.json").read_text())["cells"]
    runs = {(c["settings"]["lr"], c["settings"]["seed"]): c for c in cells}
    assert set(runs) == {(1e-9, 0), (0.05, 0), (0.05, 1)}
    assert runs[(0.05, 1)]["phase"] == "final" and runs[(0.05, 0)]["chosen"] and not runs[(1e-9, 0)]["chosen"]
    again = run_sweep(study, out, progress=False)  # resuming repeats the same choice and runs nothing
    assert again.ran == [] and len(again.skipped) == 3


@pytest.mark.parametrize(("text", "key", "reason"), [
    ('nmae = "x"\n', "nmae", "unknown key"),
    ('[base]\nepochz = 1\n', "base.epochz", "unknown key"),
    ('[base]\nnodes = "four"\n', "base.nodes", "expected int"),
    ('[grid]\nlearning_rate = [0.1]\n', "grid.learning_rate", "unknown key"),
    ('[grid]\nlr = 0.1\n', "grid.lr", "non-empty list"),
    ('[grid]\nlr = [0.1, -1.0]\n', "grid.lr", "must be > 0"),
    ('[grid]\nalgorithm = ["dsgdm", "sgd"]\n', "grid.algorithm", "not one of"),
    ('[grid]\nh = [{partition = "dirichlet", alpha = 0.0}]\n', "grid.h.alpha", "must be > 0"),
    ('[grid]\nh = [{partition = "classes", classes_per_node = 12}]\n', "grid.h.classes_per_node", "at most 10"),
    ('[grid]\ntopology = ["ring", "moebius"]\n', "grid.topology", "moebius"),
    ('[grid]\nlr = [0.1, 0.1]\n', "grid.lr", "duplicate"),
    ('[grid]\nlr = [0.1, 0.2]\n[selection]\ntune = "lr"\n', "base.val_fraction", "val_fraction > 0"),
    ('[base]\nval_fraction = 0.1\n[grid]\nlr = [0.1]\n[selection]\ntune = "lr"\nmetric = "mean_test_accuracy"\n',
     "selection.metric", "validation"),
    ('[grid]\nlr = [0.1]\n[selection]\ntune = "beta"\n', "selection.tune", "grid axis"),
    ('[base]\nval_fraction = 0.1\n[grid]\ndataset = ["mnist", "quadratic"]\nlr = [0.1]\n[selection]\ntune = "lr"\n',
     "grid.dataset", "quadratic"),
])
def test_bad_study_files_name_file_and_key_and_create_nothing(tmp_path: Path, text: str, key: str,
                                                               reason: str) -> None:
    path = _write(tmp_path, text, "bad.toml")
    with pytest.raises(ConfigError) as info:
        load_study(path)
    assert info.value.file == str(path) and info.value.key == key and reason in info.value.reason
    out = tmp_path / "out"
    res = CliRunner().invoke(sweep, ["--config", str(path), "--out", str(out)])
    assert res.exit_code == 2 and "bad.toml" in res.output and key in res.output
    assert not out.exists()


@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_ctrl_c_or_kill_stops_workers_and_the_sweep_resumes(tmp_path: Path, how: str) -> None:
    study = _write(tmp_path, QUADRATIC.format(rounds=3000).replace("nodes = 4", "nodes = 4\ndim = 200"))
    out = tmp_path / "sweep"
    # As from a terminal, where Ctrl-C reaches a process that has SIGINT at its default. A test run started in
    # the background (`pytest ... &` from a script) ignores SIGINT and hands that on to its children, and
    # Python then installs no KeyboardInterrupt handler: the sweep would rightly go on (docs/study.md).
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from peernet.cli.study_cmd import sweep; sweep()")
    cmd = [sys.executable, "-c", code, "--config", str(study), "--out", str(out), "--jobs", "2", "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (out / "results.jsonl").is_file() or not (out / "results.jsonl").read_text().strip():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.1)
        workers = _children(proc.pid)
        assert len(workers) >= 2, workers
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        else:
            os.kill(proc.pid, signal.SIGTERM)  # `kill PID`: the parent alone must end its workers
        output = proc.communicate(timeout=60)[0].decode()
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "workers outlived the sweep"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, output
    assert "interrupted" in output
    finished = [p.name for p in (out / "cells").iterdir()]
    assert finished and all(not name.endswith(".partial") for name in finished)
    assert all((out / "cells" / name / "summary.json").is_file() for name in finished)
    result = run_sweep(load_study(study), out, progress=False, limit=0)  # check what a rerun would skip
    assert sorted(result.skipped) == sorted(finished) and result.interrupted == (len(finished) < 4)


def _children(pid: int) -> list[int]:
    """Child process ids of ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_a_diverging_cell_is_a_finished_failure_and_the_report_says_so(tmp_path: Path) -> None:
    from peernet.study.report import write_report

    text = QUADRATIC.format(rounds=200).replace('heterogeneity = [1.0, 3.0]', 'lr = [0.05, 50.0]')
    study = load_study(_write(tmp_path, text.replace('["momentum-tracking", "dsgdm"]', '["momentum-tracking"]')))
    out = tmp_path / "sweep"
    result = run_sweep(study, out, progress=False)
    (failed,) = result.failed
    summary = json.loads((out / "cells" / failed / "summary.json").read_text())
    assert summary["status"] == "failed" and "diverged" in summary["error"]
    assert run_sweep(study, out, progress=False).ran == []  # deterministic: not retried
    table = write_report(out)["table"]
    assert "| momentum-tracking | 50.0 | 1 (1 failed) | – |" in table
