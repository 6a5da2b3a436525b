"""``peernet chaos SCENARIO``: run a local cluster through a fault scenario (docs/fault-injection.md)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import click

from peernet.cli.common import given_log_level, log_level_option, reports_errors
from peernet.cli.simulate_cmd import format_summary


@click.command("chaos")
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="run directory (default: runs/chaos-<name>-<time>)")
@click.option("--json", "as_json", is_flag=True, help="print the report (events, summary) as one JSON line")
@click.option("--force", is_flag=True,
              help="delete what an earlier run left in --out first (without it a non-empty --out is refused)")
@click.option("--quiet", is_flag=True, help="no progress line")
@log_level_option(own=True, default="info; the nodes and the bootstrap get it too")
@reports_errors
def chaos(scenario: str, out: str | None, as_json: bool, force: bool, quiet: bool) -> None:
    """Run a cluster on this machine and apply SCENARIO's events: kill -9, SIGSTOP/SIGCONT, restarts, bootstrap
    kills and, with a [network] table, per-process network namespaces with nftables loss and partitions and
    tc bandwidth limits (needs root, iproute2, nftables). Exits non-zero if a node that was not killed fails
    or the scenario's timeout passes; every process and namespace it made is removed either way, also on
    SIGTERM, SIGHUP or Ctrl-C (exit 128 + the signal's number, stopped.json says what was done) and, by a
    reaper process, when this command is killed outright.
    """
    from peernet.chaos.harness import ChaosRun
    from peernet.chaos.scenario import load_scenario
    from peernet.interrupts import stop_signals
    from peernet.node.preflight import preflight
    from peernet.rundir import claim_run_dir

    level = given_log_level()
    logging.basicConfig(level=(level or "info").upper(), format="%(asctime)s chaos %(message)s")
    sc = load_scenario(scenario)
    if level is not None:
        sc = dataclasses.replace(sc, node_options={**sc.node_options, "log_level": level})
    # Before the run directory is touched and any process starts: what a node would fail on, said here.
    preflight(sc.settings, sc.node_options, source=str(sc.path), section="nodes", network=sc.network is not None)
    run_dir = Path(out) if out else Path("runs") / time.strftime(f"chaos-{sc.name}-%Y%m%d-%H%M%S")
    with stop_signals(), claim_run_dir(run_dir, force=force) as claim:
        click.echo(f"chaos scenario {sc.name}: {len(sc.events)} events, "
                   f"{'network namespaces' if sc.network else 'loopback'}, run dir {run_dir}", err=True)
        report = ChaosRun(sc, run_dir, keep_fds=[claim.fd], progress=not quiet).run()
    click.echo(format_summary(report["summary"]), err=as_json)  # --json: stdout holds the JSON only
    for ev in report["events"]:
        click.echo(f"  t={ev['time']:7.1f}s  {ev['action']}{'' if ev['node'] is None else ' node ' + str(ev['node'])}",
                   err=True)
    if as_json:
        click.echo(json.dumps(report))
