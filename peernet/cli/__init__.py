"""The ``peernet`` command line: one click group, one module per sub-command."""

from __future__ import annotations

import click

from peernet import __version__
from peernet.cli.bootstrap_cmd import bootstrap, status
from peernet.cli.chaos_cmd import chaos
from peernet.cli.data_cmd import data_group
from peernet.cli.keygen_cmd import keygen
from peernet.cli.local_cmd import local
from peernet.cli.node_cmd import node
from peernet.cli.simulate_cmd import simulate
from peernet.cli.study_cmd import report, sweep
from peernet.cli.topology_cmd import topology_group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="peernet")
def main() -> None:
    """peernet: decentralized deep learning (Momentum Tracking and baselines) over ZeroMQ.

    Run `peernet COMMAND --help` for the options of each command.
    """


main.add_command(topology_group)
main.add_command(data_group)
main.add_command(simulate)
main.add_command(local)
main.add_command(node)
main.add_command(bootstrap)
main.add_command(status)
main.add_command(keygen)
main.add_command(sweep)
main.add_command(report)
main.add_command(chaos)
