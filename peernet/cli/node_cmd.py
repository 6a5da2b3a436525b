"""``peernet node``: run one node daemon in the foreground."""

from __future__ import annotations

import json
import logging
import sys

import click

from peernet.cli.common import given_log_level, log_level_option, reports_errors
from peernet.errors import BootstrapRejected, BootstrapUnavailable


def setup_logging(level: str, node_id: int | None = None) -> None:
    """Log lines that say which node (and, in messages, which peer and round)."""
    who = f"node{node_id} " if node_id is not None else ""
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr, force=True,
                        format=f"%(asctime)s {who}%(levelname)s %(message)s")


@click.command("node")
@click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False),
              help="node TOML file (id, run settings file, listen address, bootstrap, state_dir, device, ...)")
@click.option("--fresh", is_flag=True, help="ignore any checkpoint in state_dir and start from round 0")
@click.option("--json", "as_json", is_flag=True, help="print the node's summary as one JSON line at exit")
@log_level_option(own=True, default="the config's log_level")
@reports_errors
def node(config_file: str, fresh: bool, as_json: bool) -> None:
    """Run one peernet node: register with the bootstrap, wait for the start signal, train with the neighbours.

    Resumes from the latest checkpoint in state_dir unless --fresh. SIGTERM, SIGHUP or Ctrl-C: the node abandons
    the round in progress, writes a checkpoint and (once training began) summary.json with finished: false, and
    exits 0. Exit status 3: the bootstrap refused the registration (the reason is printed); 4: the bootstrap
    did not answer.
    """
    from peernet.device import check_device
    from peernet.node.allocator import reuse_freed_memory
    from peernet.node.config import load_node_config
    from peernet.node.daemon import NodeDaemon
    from peernet.transport.trim import trim_after_hostile_messages

    cfg = load_node_config(config_file)
    check_device(cfg.device, config_file)
    setup_logging(given_log_level() or cfg.log_level, cfg.id)
    reuse_freed_memory()  # the whole process is this daemon: its rounds' tensors reuse freed memory
    trim_after_hostile_messages()  # ... and what a hostile message occupied goes back to the system after it
    daemon = NodeDaemon(cfg, fresh=fresh)
    daemon.install_signal_handlers()
    try:
        summary = daemon.run()
    except BootstrapRejected as exc:
        click.echo(f"error: node {cfg.id}: {exc}", err=True)
        sys.exit(3)
    except BootstrapUnavailable as exc:
        click.echo(f"error: node {cfg.id}: {exc}", err=True)
        sys.exit(4)
    if as_json:
        click.echo(json.dumps(summary))
