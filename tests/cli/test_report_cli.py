"""``peernet report --merge``: a run directory collected from hosts gets the summary `peernet local` would write."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from peernet.cli import main

NODE_FILES = ("metrics.jsonl", "summary.json", "checkpoint.pt")


def collect(local: Path, dest: Path, node_files: tuple[str, ...] = NODE_FILES) -> None:
    """What deploy/collect.yml leaves: the run files and each node's state, but no merged summary."""
    dest.mkdir()
    for name in ("run.toml", "topology.toml"):
        shutil.copy(local / name, dest / name)
    for node_dir in sorted((local / "nodes").iterdir()):
        (dest / "nodes" / node_dir.name).mkdir(parents=True)
        for name in node_files:
            shutil.copy(node_dir / name, dest / "nodes" / node_dir.name / name)


def test_merge_of_a_collected_run_matches_the_local_summary(tmp_path: Path) -> None:
    local = tmp_path / "local"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "peernet", "local", "--dataset", "quadratic", "--nodes", "3",
                           "--topology", "ring", "--rounds", "30", "--out", str(local), "--quiet", "--json"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = json.loads(proc.stdout.strip().splitlines()[-1])
    collected = tmp_path / "collected"
    collect(local, collected)

    res = CliRunner().invoke(main, ["report", str(collected), "--merge", "--json"])
    assert res.exit_code == 0, res.output
    merged = json.loads(res.output.strip().splitlines()[-1])["summary"]
    assert json.loads((collected / "summary.json").read_text()) == merged
    assert merged["final_rounds"] == {"0": 30, "1": 30, "2": 30}
    for key in ("algorithm", "nodes", "topology", "rounds", "finished_nodes", "consensus_distance",
                "distance_to_optimum", "tracker_sum_error", "bytes_out"):
        assert merged[key] == expected[key], key
    assert 0 < merged["wall_seconds"] < expected["wall_seconds"]  # the nodes' own clock: start to exit
    assert (collected / "report.md").is_file() and "momentum-tracking" in (collected / "report.md").read_text()


def test_merge_names_the_nodes_whose_state_is_missing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "nodes" / "node0").mkdir(parents=True)
    (run / "run.toml").write_text('dataset = "quadratic"\ntopology = "ring"\nnodes = 3\n')
    res = CliRunner().invoke(main, ["report", str(run), "--merge"])
    assert res.exit_code == 2 and "node(s) [0, 1, 2]" in res.output and "Traceback" not in res.output
    assert not (run / "summary.json").exists()
    res = CliRunner().invoke(main, ["report", str(tmp_path), "--merge"])
    assert res.exit_code == 2 and "no run.toml here" in res.output


def test_data_dir_needs_merge(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["report", str(tmp_path), "--data-dir", str(tmp_path)])
    assert res.exit_code == 2 and "--data-dir only matters with --merge" in res.output
