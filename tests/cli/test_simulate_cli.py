"""`peernet simulate`: options, config files, JSON summary, metrics files and error reporting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from peernet.cli import main
from peernet.metrics.jsonl import read_jsonl

KEYS = {"algorithm", "nodes", "rounds", "wall_seconds", "mean_test_accuracy", "averaged_model_test_accuracy",
        "consensus_distance"}


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_quadratic_json_summary_and_metrics(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["simulate", "--dataset", "quadratic", "--rounds", "200", "--quiet",
                                    "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = _last_json(res.output)
    assert summary.keys() >= KEYS
    assert summary["algorithm"] == "momentum-tracking" and summary["nodes"] == 8 and summary["rounds"] == 200
    assert summary["distance_to_optimum"] < 1e-2
    records = read_jsonl(out / "metrics.jsonl")
    assert sum(r["event"] == "round" for r in records) == 200
    assert any(r["event"] == "eval" for r in records)
    assert json.loads((out / "summary.json").read_text())["rounds"] == 200


def test_config_file_and_override(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text('algorithm = "dsgd"\ndataset = "quadratic"\nrounds = 50\ntopology = "complete"\nnodes = 4\n')
    res = CliRunner().invoke(main, ["simulate", "--config", str(cfg), "--rounds", "30", "--quiet", "--json"])
    assert res.exit_code == 0, res.output
    summary = _last_json(res.output)
    assert (summary["algorithm"], summary["rounds"], summary["nodes"]) == ("dsgd", 30, 4)


def test_image_json_has_accuracy(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["simulate", "--dataset", "fashion-mnist", "--model", "mlp", "--nodes", "4",
                                    "--rounds", "5", "--eval-samples", "500", "--quiet", "--json"])
    assert res.exit_code == 0, res.output
    summary = _last_json(res.output)
    assert 0.0 <= summary["mean_test_accuracy"] <= 1.0
    assert 0.0 <= summary["averaged_model_test_accuracy"] <= 1.0


def test_bad_config_names_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('algoritm = "dsgd"\n')
    res = CliRunner().invoke(main, ["simulate", "--config", str(cfg)])
    assert res.exit_code != 0
    assert "bad.toml" in res.output and "algoritm" in res.output and "unknown key" in res.output
    cfg.write_text('rounds = "ten"\n')
    res = CliRunner().invoke(main, ["simulate", "--config", str(cfg)])
    assert res.exit_code != 0 and "rounds" in res.output and "expected int" in res.output
    cfg.write_text('beta = 1.5\n')
    res = CliRunner().invoke(main, ["simulate", "--config", str(cfg)])
    assert res.exit_code != 0 and "beta" in res.output and "[0, 1)" in res.output
    res = CliRunner().invoke(main, ["simulate", "--config", str(tmp_path / "missing.toml")])
    assert res.exit_code != 0 and "file not found" in res.output


def test_help_documents_every_option() -> None:
    res = CliRunner().invoke(main, ["simulate", "--help"])
    assert res.exit_code == 0
    for opt in ("--algorithm", "--topology", "--nodes", "--dataset", "--model", "--partition",
                "--classes-per-node", "--alpha", "--lr", "--beta", "--batch-size", "--rounds", "--epochs",
                "--seed", "--out", "--config", "--json"):
        assert opt in res.output


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


@pytest.mark.parametrize("command", [["simulate", "--dataset", "quadratic", "--rounds", "5", "--quiet"],
                                     ["sweep", "--config", "STUDY"]])
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_device_cuda_without_cuda_is_a_clear_error_naming_the_option(tmp_path: Path, command: list[str],
                                                                     device: str) -> None:
    if not _no_cuda():
        pytest.skip("this machine has CUDA: the error cannot happen here")
    study = tmp_path / "study.toml"
    study.write_text('name = "s"\n[base]\ndataset = "quadratic"\nrounds = 5\n[grid]\nalgorithm = ["dsgd"]\n')
    args = [str(study) if a == "STUDY" else a for a in command]
    res = CliRunner().invoke(main, [*args, "--device", device, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "'--device'" in res.output and "CUDA is not available" in res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def test_simulate_summary_says_which_mode_device_and_threads_ran() -> None:
    res = CliRunner().invoke(main, ["simulate", "--dataset", "quadratic", "--rounds", "20", "--quiet", "--json",
                                    "--device", "cpu", "--threads", "1"])
    assert res.exit_code == 0, res.output
    summary = _last_json(res.output)
    assert (summary["mode"], summary["device"], summary["threads"]) == ("vectorized", "cpu", 1)
    assert summary["peak_rss_mb"] > 0


def test_protocol_mode_with_a_crash_and_node_options(tmp_path: Path) -> None:
    options = tmp_path / "node.toml"
    options.write_text("deadline_floor = 0.5\n[faults]\nduplicate = 0.1\nseed = 2\n")
    res = CliRunner().invoke(main, ["simulate", "--mode", "protocol", "--dataset", "quadratic", "--nodes", "6",
                                    "--rounds", "150", "--crash", "2@50", "--node-options", str(options),
                                    "--quiet", "--json"])
    assert res.exit_code == 0, res.output
    summary = _last_json(res.output)
    assert summary.keys() >= KEYS
    assert summary["mode"] == "protocol" and summary["crashed"] == [2] and summary["finished_nodes"] == 5
    assert summary["survivors"] == [0, 1, 3, 4, 5] and summary["timeouts"] >= 2  # both neighbours excluded it
    assert summary["tracker_sum_error"] <= 1e-9


@pytest.mark.parametrize(("args", "needle"), [
    (["--mode", "loop", "--crash", "1@5"], "only with --mode protocol"),
    (["--mode", "protocol", "--crash", "1x"], "is not NODE@ROUND"),
    (["--mode", "protocol", "--crash", "99@5"], "not in the topology"),
])
def test_protocol_options_are_checked(args: list[str], needle: str) -> None:
    res = CliRunner().invoke(main, ["simulate", "--dataset", "quadratic", "--rounds", "5", "--quiet", *args])
    assert res.exit_code != 0 and needle in res.output, res.output


@pytest.mark.parametrize(("text", "key"), [("id = 3\n", "id"), ("deadline_floor = -1\n", "deadline_floor"),
                                           ("[faults]\ndrop = 2.0\n", "faults.drop")])
def test_bad_node_options_file_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    options = tmp_path / "node.toml"
    options.write_text(text)
    res = CliRunner().invoke(main, ["simulate", "--mode", "protocol", "--dataset", "quadratic", "--rounds", "5",
                                    "--quiet", "--node-options", str(options)])
    assert res.exit_code != 0 and str(options) in res.output and f"'{key}'" in res.output, res.output
    assert "Traceback" not in res.output
