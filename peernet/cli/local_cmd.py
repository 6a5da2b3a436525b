"""``peernet local``: a bootstrap and N node daemons as separate processes on this machine."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from peernet.cli.common import reports_errors
from peernet.cli.settings_opts import pop_settings, settings_options
from peernet.cli.simulate_cmd import format_summary


@click.command("local")
@settings_options
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="run directory (default: runs/local-<time>): configs, per-node state, logs, summary, plot")
@click.option("--checkpoint-every", type=int, default=20, show_default=True, help="node checkpoint interval")
@click.option("--timeout", type=float, default=None, help="give up (and stop every process) after this many s")
@click.option("--json", "as_json", is_flag=True, help="print the merged summary as one JSON object on the last line")
@click.option("--quiet", is_flag=True, help="no progress line")
@click.option("--curve/--no-curve", default=True, show_default=True,
              help="CURVE-encrypt and authenticate every connection, with fresh keys in the run directory's keys/")
@reports_errors
def local(out: str | None, checkpoint_every: int, timeout: float | None, as_json: bool, quiet: bool, curve: bool,
          **kwargs: Any) -> None:
    """Run a real cluster on 127.0.0.1: one bootstrap and one daemon process per node, random free ports.

    Takes the same settings as `peernet simulate`; the --json summary has the same keys. Exits non-zero if
    any node fails (its log is in the run directory). Every connection uses CURVE unless --no-curve; the
    result is the same either way.
    """
    from peernet.config import total_rounds
    from peernet.node.launcher import LaunchError, LocalCluster
    from peernet.node.results import merge_run, plot_run
    from peernet.tasks import rounds_per_epoch

    settings = pop_settings(kwargs)
    run_dir = Path(out) if out else Path("runs") / time.strftime("local-%Y%m%d-%H%M%S")
    cluster = LocalCluster.prepare(settings, run_dir, {"checkpoint_every": checkpoint_every}, curve=curve)
    rounds = settings.rounds if settings.rounds is not None else total_rounds(
        settings, rounds_per_epoch(settings, cluster.topology.n))
    start = time.perf_counter()
    try:
        cluster.start()
        click.echo(f"local cluster: {cluster.topology.n} nodes, bootstrap {cluster.address}, "
                   f"{'CURVE' if curve else 'no CURVE'}, run dir {run_dir}", err=True)
        codes = cluster.wait(rounds, progress=not quiet, timeout=timeout)
    finally:
        cluster.stop()
    wall = time.perf_counter() - start
    failed = {i: c for i, c in codes.items() if c != 0}
    if failed:
        raise LaunchError("nodes failed: " + ", ".join(f"node {i} (exit {c}, log {run_dir}/node{i}.log)"
                                                       for i, c in sorted(failed.items())))
    state_dirs = {i: cluster.state_dir(i) for i in cluster.topology.ids}
    summary = merge_run(settings, cluster.topology, state_dirs, wall)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_run(state_dirs, run_dir / "curves.png")
    click.echo(format_summary(summary), err=as_json)  # --json: stdout holds the JSON only
    click.echo(f"run directory: {run_dir} (summary.json, curves.png, nodes/*/metrics.jsonl)", err=True)
    if as_json:
        click.echo(json.dumps(summary))
