"""The ``peernet`` command line: one click group, one module per sub-command, each imported when it runs."""

from __future__ import annotations

import importlib

import click

from peernet import __version__

#: Command name -> "module:attribute". The modules are imported only when their command runs (or for the
#: top-level --help), because several of them import torch (~3 s on a loaded 2-core host) and the bootstrap,
#: status, keygen and topology commands do not need it.
COMMANDS: dict[str, str] = {
    "topology": "peernet.cli.topology_cmd:topology_group",
    "data": "peernet.cli.data_cmd:data_group",
    "simulate": "peernet.cli.simulate_cmd:simulate",
    "local": "peernet.cli.local_cmd:local",
    "node": "peernet.cli.node_cmd:node",
    "bootstrap": "peernet.cli.bootstrap_cmd:bootstrap",
    "status": "peernet.cli.bootstrap_cmd:status",
    "keygen": "peernet.cli.keygen_cmd:keygen",
    "sweep": "peernet.cli.study_cmd:sweep",
    "report": "peernet.cli.study_cmd:report",
    "chaos": "peernet.cli.chaos_cmd:chaos",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are loaded from ``COMMANDS`` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command), target
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="peernet")
def main() -> None:
    """peernet: decentralized deep learning (Momentum Tracking and baselines) over ZeroMQ.

    Run `peernet COMMAND --help` for the options of each command.
    """
