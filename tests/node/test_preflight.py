"""`local` and `chaos` refuse in-process, before any file or process, what a node would die of after the start."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from peernet.cli.chaos_cmd import chaos
from peernet.cli.local_cmd import local
from peernet.cli.simulate_cmd import simulate
from peernet.config import RunSettings
from peernet.errors import ConfigError, LaunchError
from peernet.node.preflight import check_key_files, preflight

QUAD = ["--dataset", "quadratic", "--nodes", "3", "--rounds", "5"]


def error_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("error: "))


def test_missing_data_is_said_as_simulate_says_it_and_leaves_no_trace(tmp_path: Path) -> None:
    where = ["--nodes", "2", "--rounds", "5", "--data-dir", str(tmp_path / "nodata")]
    out = tmp_path / "run"
    result = CliRunner().invoke(local, [*where, "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert "dataset 'fashion-mnist' not found" in result.output
    assert error_line(result.output) == error_line(CliRunner().invoke(simulate, where).output)


def test_a_wrong_peernet_data_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEERNET_DATA", str(tmp_path / "nonexistent"))
    result = CliRunner().invoke(local, ["--nodes", "2", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and not (tmp_path / "run").exists()
    assert f"error: PEERNET_DATA={tmp_path / 'nonexistent'} is not a directory" in result.output


def test_node_options_are_parsed_as_a_node_would(tmp_path: Path) -> None:
    result = CliRunner().invoke(local, [*QUAD, "--checkpoint-every", "-1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and not (tmp_path / "run").exists()
    assert "error: command line: key 'checkpoint_every': must be >= 0, got -1" in result.output


def test_an_ipc_socket_path_too_long_is_refused_first(tmp_path: Path) -> None:
    out = tmp_path / ("d" * 120)
    result = CliRunner().invoke(local, [*QUAD, "--transport", "ipc", "--out", str(out)])
    assert result.exit_code == 2 and not out.exists() and "--transport ipc" in result.output


def test_a_scenario_typo_names_the_scenario_file_and_its_nodes_key(tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text('dataset = "quadratic"\nnodes = 3\nrounds = 5\n')
    scenario = tmp_path / "typo.toml"
    scenario.write_text('run = "run.toml"\n[nodes]\ndeadline_flor = 2.0\n')
    result = CliRunner().invoke(chaos, [str(scenario), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and not (tmp_path / "out").exists()
    assert f"error: {scenario}: key 'nodes.deadline_flor': unknown key" in result.output


def test_options_the_launcher_sets_are_refused() -> None:
    settings = RunSettings(dataset="quadratic", nodes=3, rounds=5)
    with pytest.raises(ConfigError, match=r"key 'nodes\.listen': set by the launcher"):
        preflight(settings, {"listen": "tcp://127.0.0.1:5000"}, source="s.toml", section="nodes")
    with pytest.raises(ConfigError, match=r"key 'faults\.drop': must be a probability in \[0, 1\]"):
        preflight(settings, {"faults": {"drop": 2.0}})
    assert preflight(settings, {"checkpoint_every": 5, "faults": {"drop": 0.1}}).n == 3


def test_key_files_already_there_must_load(tmp_path: Path) -> None:
    check_key_files(tmp_path / "none")  # no keys yet: the run makes them
    (tmp_path / "node0.key").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"node0\.key: public key file is not a ZeroMQ CURVE certificate"):
        check_key_files(tmp_path)


def test_the_ipc_check_alone_creates_nothing(tmp_path: Path) -> None:
    from peernet.cli.local_cmd import ipc_endpoints

    with pytest.raises(LaunchError):
        ipc_endpoints(tmp_path / ("d" * 120), [0], create=False)
    assert ipc_endpoints(tmp_path / "run", [0], create=False) and not (tmp_path / "run").exists()
