"""`peernet local --resume`: a run stopped by SIGTERM continues bit-exactly (real processes), and what it refuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from peernet.cli import main
from peernet.config import RunSettings
from peernet.metrics.jsonl import read_jsonl
from peernet.node.results import final_params
from tests.clusters import reference

RUN = ["--algorithm", "momentum-tracking", "--dataset", "quadratic", "--nodes", "4", "--topology", "ring",
       "--heterogeneity", "3", "--lr", "0.05", "--rounds", "150"]
SETTINGS = RunSettings(algorithm="momentum-tracking", dataset="quadratic", nodes=4, topology="ring",
                       heterogeneity=3.0, lr=0.05, rounds=150)


def invoke(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(main, args)
    assert "Traceback" not in res.output, res.output
    return res.exit_code, res.output


def rounds_done(run: Path) -> list[int]:
    paths = [run / "nodes" / f"node{i}" / "metrics.jsonl" for i in range(4)]
    return [max((r["round"] for r in read_jsonl(p) if r.get("event") == "round"), default=0) if p.is_file() else 0
            for p in paths]


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its nodes die with it (parent-death signal, reaper)
            proc.wait()


@pytest.mark.timeout(240)
def test_a_run_stopped_by_sigterm_resumes_bit_exactly(tmp_path: Path, launcher: list[subprocess.Popen[bytes]]
                                                      ) -> None:
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with (tmp_path / "launcher.err").open("wb") as err:
        # Checkpoints only at exit: the resume starts from what the SIGTERM made the nodes write.
        proc = subprocess.Popen([sys.executable, "-m", "peernet", "local", *RUN, "--checkpoint-every", "0",
                                 "--quiet", "--out", str(run)], stdout=subprocess.DEVNULL, stderr=err, env=env,
                                start_new_session=True)
    launcher.append(proc)
    deadline = time.monotonic() + 120
    while min(rounds_done(run)) < 20 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM, (tmp_path / "launcher.err").read_text()
    stopped = [json.loads((run / "nodes" / f"node{i}" / "summary.json").read_text())["final_round"] for i in range(4)]
    assert min(stopped) >= 20 and max(stopped) < 150 and (run / "stopped.json").is_file()

    # Operational options are the resuming command's own: every node on the CPU here, metrics on free ports.
    code, output = invoke(["local", "--resume", str(run), "--quiet", "--json", "--devices", "auto",
                           "--metrics-port", "0"])
    assert code == 0, output
    node0 = (run / "node0.toml").read_text()
    assert 'device = "cpu"' in node0 and 'metrics_listen = "127.0.0.1:0"' in node0
    assert 'metrics_listen = "127.0.0.1:0"' in (run / "bootstrap.toml").read_text()
    assert "metrics at http://127.0.0.1:" in (run / "node0.log").read_text()
    assert "resuming 4 nodes from their checkpoints (round" in output and "warning" not in output, output
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary["finished_nodes"] == 4 and summary["timeouts"] == 0 and not (run / "stopped.json").exists()
    starts = [r for r in read_jsonl(run / "nodes" / "node0" / "metrics.jsonl") if r.get("event") == "start"]
    assert [r["resumed_from"] for r in starts] == [0, stopped[0]]
    # The uninterrupted run, in the per-node simulator loop that computes exactly as the daemons do.
    assert torch.equal(final_params({i: run / "nodes" / f"node{i}" for i in range(4)}), reference(SETTINGS, tmp_path))

    code, output = invoke(["local", "--resume", str(run)])
    assert code == 2 and "the run finished (summary.json): nothing to resume" in output, output


def test_resume_refuses_settings_and_directories_that_are_no_run(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    code, output = invoke(["local", "--resume", str(tmp_path / "other")])
    assert code == 2 and "is not a run directory of `peernet local` (no run.toml" in output, output
    for extra in (["--rounds", "5"], ["--out", str(tmp_path / "x")], ["--no-curve"]):
        code, output = invoke(["local", "--resume", str(tmp_path / "other"), *extra])
        assert code == 2 and "--resume continues the run with its own settings" in output, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]
