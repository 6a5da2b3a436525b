"""``peernet local``: a bootstrap and N node daemons as separate processes on this machine."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from peernet.cli.common import given_log_level, log_level_option, reports_errors
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
@click.option("--resume", type=click.Path(file_okay=False, exists=True), default=None, metavar="RUN_DIR",
              help="continue the stopped run in RUN_DIR from its nodes' checkpoints, with its own settings, "
                   "topology and keys; bit-exact when every node stopped cleanly (docs/node.md, Resuming a run)")
@click.option("--devices", default=None,
              help="torch device of each node: auto (the k-th node on cuda:(k mod GPUs) when CUDA is present, else "
                   "cpu) or a comma list of cpu, cuda, cuda:N dealt out in turn [default: each node's own default, "
                   "auto: CUDA device 0 when present]")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, metavar="PORT",
              help="serve Prometheus metrics on 127.0.0.1: the bootstrap at PORT, the k-th node at PORT + 1 + k "
                   "(0: free ports); each process writes its URL into its state directory's metrics_url")
@log_level_option(default="warning here; info for the nodes and the bootstrap, which get the level given")
@reports_errors
def local(out: str | None, force: bool, checkpoint_every: int, timeout: float | None, as_json: bool, quiet: bool,
          curve: bool, transport: str, resume: str | None, devices: str | None, metrics_port: int | None,
          **kwargs: Any) -> None:
    """Run a real cluster on this machine: one bootstrap and one daemon process per node (Unix sockets or loopback TCP).

    Takes the same settings as `peernet simulate`; the --json summary has the same keys. Data, model,
    topology and node options are checked before anything is written or started, with simulate's messages.
    Prints the `peernet status` command that watches the run. Exits non-zero if any node fails, naming it
    and the first error line of its log (in the run directory). Every connection uses CURVE unless --no-curve; the
    result is the same either way. SIGTERM, SIGHUP and Ctrl-C stop every process (exit 128 + the signal's
    number; stopped.json says what was done); the processes also end if this command is killed outright.
    """
    from peernet.interrupts import stop_signals
    from peernet.node.preflight import preflight
    from peernet.node.resume import resumable_settings
    from peernet.rundir import claim_run_dir

    if resume is not None:
        _refuse_beside_resume(kwargs, out=out, force=force)
    settings = resumable_settings(Path(resume)) if resume is not None else pop_settings(kwargs)
    level = given_log_level()
    node_options: dict[str, Any] = {"checkpoint_every": checkpoint_every, **({"log_level": level} if level else {})}
    run_dir = Path(resume or out or Path("runs") / time.strftime("local-%Y%m%d-%H%M%S"))
    # Topology, data, model, node options, the ipc socket paths: refused before the directory is touched and
    # before any process starts, with the messages `peernet simulate` gives.
    # A resumed run uses the key files it has: they must load (a fresh run makes its own).
    keys = run_dir / "keys" if resume is not None else None
    topology = preflight(settings, node_options, source="command line", keys_dir=keys)
    per_node, boot_metrics = _placement(topology.ids, devices, metrics_port)
    if transport == "ipc":
        ipc_endpoints(run_dir, topology.ids, create=False)
    with stop_signals(), claim_run_dir(run_dir, force=force, resume=resume is not None) as claim:
        summary = _run(settings, run_dir, claim.fd, node_options, curve=curve, timeout=timeout,
                       progress=not quiet, transport=transport, per_node=per_node, bootstrap_metrics=boot_metrics,
                       resume=resume is not None)
    click.echo(format_summary(summary), err=as_json)  # --json: stdout holds the JSON only
    click.echo(f"run directory: {run_dir} (summary.json, curves.png, nodes/*/metrics.jsonl)", err=True)
    if as_json:
        click.echo(json.dumps(summary))


def _run(settings: RunSettings, run_dir: Path, lock_fd: int, node_options: dict[str, Any], *, curve: bool,
         timeout: float | None, progress: bool, transport: str = "auto",
         per_node: dict[int, dict[str, Any]] | None = None, bootstrap_metrics: str | None = None,
         resume: bool = False) -> dict[str, Any]:
    """Prepare, start, wait, stop, merge; on a stop signal write stopped.json and let Interrupted go on."""
    from peernet.config import total_rounds
    from peernet.errors import Interrupted
    from peernet.node.launcher import LocalCluster
    from peernet.node.resume import checkpoint_states, describe_states
    from peernet.procs import Reaper
    from peernet.rundir import STOPPED_NAME, write_stopped
    from peernet.tasks import rounds_per_epoch

    if resume:
        for line in describe_states(checkpoint_states(run_dir, settings)):
            click.echo(line, err=True)
    cluster = (LocalCluster.reopen(run_dir, node_options) if resume
               else LocalCluster.prepare(settings, run_dir, node_options, curve=curve))
    cluster.per_node = per_node or {}
    _bootstrap_metrics(run_dir / "bootstrap.toml", bootstrap_metrics)
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
            (run_dir / STOPPED_NAME).unlink(missing_ok=True)  # a resumed run is no longer the stopped one
            click.echo(f"local cluster: {cluster.topology.n} nodes, bootstrap {cluster.address}, "
                       f"{'ipc' if cluster.listen else 'tcp'}, {'CURVE' if cluster.curve else 'no CURVE'}, run dir "
                       f"{run_dir}", err=True)
            click.echo(f"watch it: peernet status --run-dir {shlex.quote(str(run_dir))} --watch 2", err=True)
            if bootstrap_metrics is not None:
                click.echo(f"Prometheus metrics: bootstrap http://{bootstrap_metrics}/metrics, nodes on the ports "
                           "after it (port 0: free ports); each URL is in the state directory's metrics_url", err=True)
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
    from peernet.node.failures import describe_failures
    from peernet.node.results import merge_run, plot_run

    run_dir = cluster.out
    # A node still running (None) was stopped because another failed: only the failed ones are named.
    failed = {f"node {i}": (c, run_dir / f"node{i}.log") for i, c in sorted(codes.items()) if c not in (0, None)}
    if failed or any(c is None for c in codes.values()):
        raise LaunchError(f"failed: {describe_failures(failed)}" if failed else "nodes did not finish")
    state_dirs = {i: cluster.state_dir(i) for i in cluster.topology.ids}
    summary = merge_run(settings, cluster.topology, state_dirs, wall)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_run(state_dirs, run_dir / "curves.png")
    return summary


def ipc_endpoints(run_dir: Path, ids: Iterable[int], *, required: bool = True, create: bool = True
                  ) -> dict[int, str]:
    """``ipc://`` listen endpoints for the nodes, in ``run_dir/sockets`` (made if ``create``). A path longer than
    a Unix socket path may be (the topology rule's limit) raises LaunchError when ``required`` (--transport ipc),
    else gives {}: the nodes then listen on loopback TCP (--transport auto)."""
    from peernet.core.topology_limits import endpoint_problem

    sockets = (run_dir / "sockets").resolve()
    endpoints = {i: f"ipc://{sockets}/node{i}.sock" for i in ids}
    for endpoint in endpoints.values():
        problem = endpoint_problem(endpoint)
        if problem is not None and required:
            raise LaunchError(f"--transport ipc: {endpoint} {problem}; use a run directory with a shorter path")
        if problem is not None:
            return {}
    if create:
        sockets.mkdir(mode=0o700, exist_ok=True)  # only this user can reach the sockets (no CURVE needed on them)
    return endpoints


def _refuse_beside_resume(kwargs: dict[str, Any], *, out: str | None, force: bool) -> None:
    """--resume continues a run as it was set up: its settings, directory and CURVE keys are the run's own."""
    from click.core import ParameterSource

    given = [name for name, value in kwargs.items() if value is not None]
    given += [name for name, flag in (("out", out is not None), ("force", force)) if flag]
    if click.get_current_context().get_parameter_source("curve") is ParameterSource.COMMANDLINE:
        given.append("curve/--no-curve")
    if given:
        option = "--" + {"config_file": "config"}.get(given[0], given[0]).replace("_", "-")
        raise click.UsageError(f"--resume continues the run with its own settings, directory and keys "
                               f"(RUN_DIR/run.toml): leave out {option}")


def _placement(ids: Sequence[int], devices: str | None, metrics_port: int | None
               ) -> tuple[dict[int, dict[str, Any]], str | None]:
    """The node options --devices and --metrics-port give each node, and the bootstrap's metrics_listen; a device
    that is not there is refused here, before anything is written or started."""
    from peernet.device import assign_devices
    from peernet.errors import ConfigError

    per_node: dict[int, dict[str, Any]] = {i: {} for i in ids}
    if devices is not None:
        try:
            for i, device in assign_devices(devices, ids).items():
                per_node[i]["device"] = device
        except ConfigError as exc:
            raise click.BadParameter(exc.reason, param_hint="'--devices'") from None
    boot = None
    if metrics_port is not None:
        if metrics_port and metrics_port + len(ids) > 65535:
            raise click.BadParameter(f"{len(ids)} nodes need ports up to {metrics_port + len(ids)}, past 65535",
                                     param_hint="'--metrics-port'")
        boot = f"127.0.0.1:{metrics_port}"
        for k, i in enumerate(ids):
            per_node[i]["metrics_listen"] = f"127.0.0.1:{metrics_port + 1 + k if metrics_port else 0}"
    return {i: options for i, options in per_node.items() if options}, boot


def _bootstrap_metrics(path: Path, listen: str | None) -> None:
    """Set bootstrap.toml's metrics_listen, or remove it without --metrics-port (a resumed run's file may have it)."""
    from peernet.config import read_toml
    from peernet.node.launcher import write_toml

    data = read_toml(path)
    if data.get("metrics_listen") == listen:
        return
    data.pop("metrics_listen", None)
    write_toml(path, data | ({"metrics_listen": listen} if listen is not None else {}))
