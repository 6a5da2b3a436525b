"""Run settings refuse values that would only fail later: infinite floats, a run of no rounds."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from peernet.cli.simulate_cmd import simulate
from peernet.config import RunSettings, load_run_settings
from peernet.errors import ConfigError


@pytest.mark.parametrize("key", ["lr", "weight_decay", "epochs", "alpha", "heterogeneity", "clip_tau",
                                 "clip_tau_tracker"])
def test_infinite_floats_are_refused_naming_the_key(key: str) -> None:
    with pytest.raises(ConfigError, match=f"key '{key}': must be .*finite, got inf"):
        RunSettings(**{key: float("inf")})


def test_lr_1e400_in_a_file_and_on_the_command_line(tmp_path: Path) -> None:
    # 1e400 parses as inf in TOML and in click's float: refused, with the file or the command line and the key.
    run = tmp_path / "run.toml"
    run.write_text('dataset = "quadratic"\nlr = 1e400\n')
    with pytest.raises(ConfigError, match=f"{run}: key 'lr': must be > 0 and finite, got inf"):
        load_run_settings(run)
    result = CliRunner().invoke(simulate, ["--dataset", "quadratic", "--lr", "1e400"])
    assert result.exit_code == 2 and "command line: key 'lr': must be > 0 and finite, got inf" in result.output


@pytest.mark.parametrize(("args", "needle"), [(["--rounds", "0"], "key 'rounds': must be >= 1, got 0"),
                                              (["--epochs", "0"], "key 'epochs': must be > 0 and finite, got 0")])
def test_a_run_of_no_rounds_is_refused(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(simulate, ["--dataset", "quadratic", *args])
    assert result.exit_code == 2 and needle in result.output


def test_evaluation_defaults_to_a_documented_subset() -> None:
    assert RunSettings().eval_samples == 2000
    assert "the last round's always uses all" in RunSettings.__dataclass_fields__["eval_samples"].metadata["help"]


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_a_clipping_radius_must_be_positive(value: float) -> None:
    with pytest.raises(ConfigError, match="key 'clip_tau': must be > 0"):
        RunSettings(clip_tau=value)
