"""``peernet local``: a bootstrap and N node daemons as separate processes on this machine."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from peernet.cli.common import reports_errors
from peernet.cli.settings_opts import pop_settings, settings_options
from peernet.cli.simulate_cmd import format_summary
from peernet.errors import LaunchError

if TYPE_CHECKING:
    from peernet.config import RunSettings
    from peernet.node.launcher import LocalCluster


@click.command("local")
@settings_options
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="run directory (default: runs/local-<time>): configs, per-node state, logs, summary, plot; "
                   "refused if it has files, unless --force")
@click.option("--force", is_flag=True,
              help="delete what an earlier run left in --out first (only a peernet run directory is emptied)")
@click.option("--checkpoint-every", type=int, default=20, show_default=True, help="node checkpoint interval")
@click.option("--timeout", type=float, default=None, help="give up (and stop every process) after this many s")
@click.option("--json", "as_json", is_flag=True, help="print the merged summary as one JSON object on the last line")
@click.option("--quiet", is_flag=True, help="no progress line")
@click.option("--curve/--no-curve", default=True, show_default=True,
              help="CURVE-encrypt and authenticate every connection, with fresh keys in the run directory's keys/")
@click.option("--transport", type=click.Choice(["auto", "ipc", "tcp"]), default="auto", show_default=True,
              help="how the nodes reach each other: Unix sockets (ipc://) in the run directory's sockets/, or "
                   "loopback TCP on random free ports; auto: ipc unless the run directory's path is too long for a "
                   "socket path (ipc moves 4 MB messages 1.5x faster than TCP here: docs/performance.md)")
@reports_errors
def local(out: str | None, force: bool, checkpoint_every: int, timeout: float | None, as_json: bool, quiet: bool,
          curve: bool, transport: str, **kwargs: Any) -> None:
    """Run a real cluster on 127.0.0.1: one bootstrap and one daemon process per node, random free ports.

    Takes the same settings as `peernet simulate`; the --json summary has the same keys. Exits non-zero if
    any node fails (its log is in the run directory). Every connection uses CURVE unless --no-curve; the
    result is the same either way. SIGTERM, SIGHUP and Ctrl-C stop every process (exit 128 + the signal's
    number; stopped.json says what was done); the processes also end if this command is killed outright.
    """
    from peernet.config import resolve_topology
    from peernet.interrupts import stop_signals
    from peernet.rundir import claim_run_dir

    settings = pop_settings(kwargs)
    resolve_topology(settings, key_files=False)  # a bad topology is refused before the directory is touched
    run_dir = Path(out) if out else Path("runs") / time.strftime("local-%Y%m%d-%H%M%S")
    with stop_signals(), claim_run_dir(run_dir, force=force) as claim:
        summary = _run(settings, run_dir, claim.fd, {"checkpoint_every": checkpoint_every}, curve=curve,
                       timeout=timeout, progress=not quiet, transport=transport)
    click.echo(format_summary(summary), err=as_json)  # --json: stdout holds the JSON only
    click.echo(f"run directory: {run_dir} (summary.json, curves.png, nodes/*/metrics.jsonl)", err=True)
    if as_json:
        click.echo(json.dumps(summary))


def _run(settings: RunSettings, run_dir: Path, lock_fd: int, node_options: dict[str, Any], *, curve: bool,
         timeout: float | None, progress: bool, transport: str = "auto") -> dict[str, Any]:
    """Prepare, start, wait, stop, merge; on a stop signal write stopped.json and let Interrupted go on."""
    from peernet.config import total_rounds
    from peernet.errors import Interrupted
    from peernet.node.launcher import LocalCluster
    from peernet.procs import Reaper
    from peernet.rundir import STOPPED_NAME, write_stopped
    from peernet.tasks import rounds_per_epoch

    cluster = LocalCluster.prepare(settings, run_dir, node_options, curve=curve)
    if transport != "tcp":
        cluster.listen = ipc_endpoints(run_dir, cluster.topology.ids, required=transport == "ipc")
    rounds = settings.rounds if settings.rounds is not None else total_rounds(
        settings, rounds_per_epoch(settings, cluster.topology.n))
    cluster.reaper = reaper = Reaper(run_dir / STOPPED_NAME, [lock_fd])  # holds the lock until it cleaned up
    start = time.perf_counter()
    ended: list[dict[str, Any]] = []
    try:
        try:
            cluster.start()
            click.echo(f"local cluster: {cluster.topology.n} nodes, bootstrap {cluster.address}, "
                       f"{'ipc' if cluster.listen else 'tcp'}, {'CURVE' if curve else 'no CURVE'}, run dir {run_dir}",
                       err=True)
            codes = cluster.wait(rounds, progress=progress, timeout=timeout)
        finally:
            ended = cluster.stop()
        return _finish(settings, cluster, codes, time.perf_counter() - start)
    except Interrupted as exc:
        exc.summary = write_stopped(run_dir, {
            "command": "local", "cause": exc.signame, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.perf_counter() - start, 3),
            "rounds": {str(i): r for i, r in cluster.rounds_done().items()}, "processes": ended, "namespaces": []})
        raise
    finally:
        reaper.close()


def _finish(settings: RunSettings, cluster: LocalCluster, codes: dict[int, int | None], wall: float
            ) -> dict[str, Any]:
    """Fail naming the nodes that failed, or merge the nodes' results into summary.json and curves.png."""
    from peernet.node.results import merge_run, plot_run

    run_dir = cluster.out
    failed = {i: c for i, c in codes.items() if c != 0}
    if failed:
        raise LaunchError("nodes failed: " + ", ".join(f"node {i} (exit {c}, log {run_dir}/node{i}.log)"
                                                       for i, c in sorted(failed.items())))
    state_dirs = {i: cluster.state_dir(i) for i in cluster.topology.ids}
    summary = merge_run(settings, cluster.topology, state_dirs, wall)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_run(state_dirs, run_dir / "curves.png")
    return summary


def ipc_endpoints(run_dir: Path, ids: Iterable[int], *, required: bool = True) -> dict[int, str]:
    """``ipc://`` listen endpoints for the nodes, in ``run_dir/sockets``. A path longer than a Unix socket path
    may be (the topology rule's limit) raises LaunchError when ``required``, else gives {} (TCP, the default)."""
    from peernet.core.topology_limits import endpoint_problem

    sockets = (run_dir / "sockets").resolve()
    endpoints = {i: f"ipc://{sockets}/node{i}.sock" for i in ids}
    for endpoint in endpoints.values():
        problem = endpoint_problem(endpoint)
        if problem is not None and required:
            raise LaunchError(f"--transport ipc: {endpoint} {problem}; use a run directory with a shorter path")
        if problem is not None:
            return {}
    sockets.mkdir(mode=0o700, exist_ok=True)  # only this user can reach the sockets (no CURVE needed on them)
    return endpoints
