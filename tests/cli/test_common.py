"""``--log-level`` on every command: it applies while the command runs and reaches the processes `local` starts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from peernet.cli import COMMANDS, main
from peernet.cli.common import log_level_option
from peernet.errors import PeernetError


def all_commands() -> dict[str, click.Command]:
    ctx = click.Context(main)
    found = {}
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None
        subs = command.commands if isinstance(command, click.Group) else {"": command}
        found |= {f"{name} {sub}".strip(): c for sub, c in subs.items()}
    return found


def test_every_command_has_log_level() -> None:
    missing = [name for name, c in all_commands().items()
               if not any("--log-level" in p.opts for p in c.params)]
    assert not missing


def test_the_level_applies_while_the_command_runs_then_logging_is_as_before() -> None:
    @click.command()
    @log_level_option()
    def talk() -> None:
        logging.getLogger("peernet.test").info("said at info")
        logging.getLogger("peernet.test").debug("said at debug")

    root, ours = logging.getLogger(), logging.getLogger("peernet")
    before = (list(root.handlers), ours.level)
    result = CliRunner().invoke(talk, ["--log-level", "info"])
    assert result.exit_code == 0 and "peernet.test INFO said at info" in result.output
    assert "said at debug" not in result.output
    assert (list(root.handlers), ours.level) == before
    assert "said at info" not in CliRunner().invoke(talk, []).output  # the default: warnings and errors only


def test_local_hands_the_level_to_the_nodes_and_the_bootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    from peernet.cli import local_cmd
    from peernet.config import RunSettings
    from peernet.node.launcher import LocalCluster

    seen: dict[str, Any] = {}

    def fake_run(settings: Any, run_dir: Path, lock_fd: int, node_options: dict[str, Any], **kw: Any) -> Any:
        seen["options"] = node_options
        raise PeernetError("stop here")

    monkeypatch.setattr(local_cmd, "_run", fake_run)
    args = ["--dataset", "quadratic", "--nodes", "2", "--rounds", "3", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(local_cmd.local, [*args, "--log-level", "debug"])
    assert result.exit_code == 2 and seen["options"]["log_level"] == "debug"

    cluster = LocalCluster.prepare(RunSettings(dataset="quadratic", nodes=2, rounds=3), tmp_path / "c",
                                   seen["options"], curve=False)

    def fake_spawn(cmd: list[str], *args: Any, **kw: Any) -> Any:
        seen["bootstrap"] = cmd
        raise PeernetError("not started")

    monkeypatch.setattr(cluster, "_spawn", fake_spawn)
    with pytest.raises(PeernetError):
        cluster.start_bootstrap()
    assert seen["bootstrap"][-2:] == ["--log-level", "debug"]


def test_the_node_command_level_overrides_its_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peernet.cli import node_cmd
    from peernet.config import RunSettings
    from peernet.node.launcher import LocalCluster, write_toml

    cluster = LocalCluster.prepare(RunSettings(dataset="quadratic", nodes=2, rounds=3), tmp_path, curve=False)
    write_toml(tmp_path / "node0.toml", {"id": 0, "run": "run.toml", "log_level": "warning"})
    levels: list[str] = []

    def record(level: str, node_id: int | None = None) -> None:
        levels.append(level)
        raise PeernetError("stop here")

    monkeypatch.setattr(node_cmd, "setup_logging", record)
    config = ["--config", str(cluster.node_config_path(0))]
    CliRunner().invoke(node_cmd.node, config)
    CliRunner().invoke(node_cmd.node, [*config, "--log-level", "debug"])
    assert levels == ["warning", "debug"]
