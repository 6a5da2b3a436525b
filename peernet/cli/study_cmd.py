"""``peernet sweep`` and ``peernet report``: run a study grid of simulations, then tabulate and plot it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from peernet.cli.common import log_level_option, reports_errors
from peernet.errors import ConfigError
from peernet.study.backends import BACKENDS, RAY_EXTRA

if TYPE_CHECKING:
    from peernet.study.backends import Backend
    from peernet.study.grid import Study
    from peernet.study.sweep import SweepResult


@click.command("sweep")
@click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False),
              help="study TOML file: [base] settings, [grid] axes, optional [selection] (see docs/study.md)")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="sweep directory (default: runs/sweep-<name>); rerunning into it resumes the sweep")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="cells run in parallel: local, one process each (default: number of cores; 1: in this process); "
                   "ray, the most tasks at once (default: as many as the cluster's resources allow)")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="simulator threads per cell (default: cores / jobs locally, 1 on Ray); a Ray task reserves as "
                   "many CPUs")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when present; on Ray: when the cluster has GPUs), cpu, cuda or cuda:N for every "
                   "cell's simulator; a CUDA cell on Ray reserves one GPU")
@click.option("--backend", type=click.Choice(BACKENDS), default="local", show_default=True,
              help="where cells run: local processes, or Ray tasks on a Ray cluster (pip install 'peernet[ray]'); "
                   "results land in --out either way")
@click.option("--address", default=None, metavar="ADDR",
              help="with --backend ray: the cluster to join, e.g. 10.0.0.1:6379 (default: $RAY_ADDRESS, the cluster "
                   "started last on this machine, else a new local one)")
@click.option("--json", "as_json", is_flag=True, help="print what was run as one JSON object on the last line")
@click.option("--quiet", is_flag=True, help="no progress line")
@log_level_option()
@reports_errors
def sweep(config_file: str, out: str | None, jobs: int | None, threads: int | None, device: str, backend: str,
          address: str | None, as_json: bool, quiet: bool) -> None:
    """Run every cell of a study (the cartesian product of its grid), each into DIR/cells/<id>/.

    The whole file is validated before anything runs. Finished cells are skipped, so an interrupted sweep
    (Ctrl-C) resumes where it stopped when run again. Then: peernet report DIR.
    """
    from peernet.rundir import claim_run_dir
    from peernet.study.grid import load_study
    from peernet.study.sweep import run_sweep

    if address is not None and backend != "ray":
        raise click.UsageError("--address only matters with --backend ray")
    if backend == "ray" and not _ray_installed():
        raise click.UsageError(f"--backend ray needs Ray, an optional extra: {RAY_EXTRA}")
    study = load_study(config_file)
    out_dir = Path(out) if out else Path("runs") / ("sweep-" + re.sub(r"[^A-Za-z0-9._-]+", "-", study.name))
    try:
        # Checked, or the cluster joined, before the directory is claimed: a failure here writes nothing.
        opened = _open(study, backend, jobs, threads, device, address)
        try:
            # Resumable by design: finished cells are kept. The lock keeps a second sweep out while this one runs.
            with claim_run_dir(out_dir, resume=True):
                result = run_sweep(study, out_dir, progress=not quiet, backend=opened)
        finally:
            opened.close()
    except ConfigError as exc:
        if exc.key in ("device", "address") and exc.file is None:
            raise click.BadParameter(exc.reason, param_hint=f"'--{exc.key}'") from None
        raise
    _tell(study.name, out_dir, result, as_json)


def _ray_installed() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _open(study: Study, backend: str, jobs: int | None, threads: int | None, device: str,
          address: str | None) -> Backend:
    """The backend, after the checks a local sweep makes on this machine (a Ray cluster's nodes check their own)."""
    from peernet.device import resolve_device
    from peernet.study.backends import open_backend
    from peernet.study.sweep import preflight

    if backend == "local":
        resolve_device(device)
        preflight(study)
    return open_backend(backend, jobs=jobs, device=device, threads=threads, address=address)


def _tell(name: str, out_dir: Path, result: SweepResult, as_json: bool) -> None:
    """The closing lines: what finished, what failed, and --json's object; exit 130 when interrupted."""
    click.echo(f"{name}: {result.finished}/{result.total} cells finished ({len(result.ran)} run now, "
               f"{len(result.skipped)} already finished, {len(result.failed)} failed) in {out_dir}", err=as_json)
    if result.failed:
        click.echo("failed cells (see their summary.json): " + ", ".join(result.failed), err=True)
    if as_json:
        click.echo(json.dumps({"out": str(out_dir), "total": result.total, "finished": result.finished,
                               "ran": result.ran, "skipped": result.skipped, "failed": result.failed,
                               "interrupted": result.interrupted}))
    if result.interrupted:
        click.echo("interrupted: run the same command again to resume", err=True)
        sys.exit(130)


@click.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="where report.md and the PNGs go (default: RUN_DIR)")
@click.option("--json", "as_json", is_flag=True, help="print the table rows as one JSON object on the last line")
@click.option("--merge", is_flag=True,
              help="daemon run directory collected from hosts: first merge the nodes' checkpoints and summaries "
                   "into RUN_DIR/summary.json (the keys of `peernet local --json`, plus each node's final round)")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="with --merge: the dataset directory on this machine, for the averaged model's accuracy "
                   "(default: run.toml's data_dir, $PEERNET_DATA, /usr/share/datasets/<name>)")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="also write every run's per-round metrics to FILE: one row per run, node and round (run, node, "
                   "round, then loss, accuracy, ... as the metrics files hold them; docs/study.md, Exports)")
@click.option("--tensorboard", "tensorboard_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="also write TensorBoard event files of the same metrics into DIR: one run per node (daemon runs) "
                   "or per cell (sweeps); step = round")
@click.option("--target", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=None,
              metavar="ACCURACY", help="also tabulate the rounds and the bytes each setting needed to reach this mean "
                                       "test accuracy (e.g. 0.7), against the same setting uncompressed")
@log_level_option()
@reports_errors
def report(run_dir: str, out: str | None, as_json: bool, merge: bool, data_dir: str | None, csv_file: str | None,
           tensorboard_dir: str | None, target: float | None) -> None:
    """Table (report.md) and plots (accuracy.png, consensus.png, heterogeneity.png) of a run directory.

    RUN_DIR is a `peernet sweep` directory, a `peernet simulate --out` directory or a daemon run directory
    (`peernet local --out`, or one collected from several hosts with the same layout: run.toml,
    topology.toml, nodes/node<id>/; `deploy/collect.yml` makes one and runs this with --merge).
    """
    from peernet.study.report import write_report

    if data_dir is not None and not merge:
        raise click.UsageError("--data-dir only matters with --merge")
    merged = None
    if merge:
        from peernet.cli.simulate_cmd import format_summary
        from peernet.study.collected import merge_run_dir

        merged = merge_run_dir(run_dir, data_dir=data_dir)
        click.echo(format_summary(merged), err=as_json)  # --json: stdout holds the JSON only
    exported = _export(Path(run_dir), csv_file, tensorboard_dir)  # first: a run without a summary yet has rounds
    result = write_report(run_dir, out, target)
    result["files"] += exported
    click.echo(result["table"], err=as_json)
    click.echo("wrote " + ", ".join(result["files"]), err=True)
    if as_json:
        rows = {"kind": result["kind"], "rows": result["rows"], "files": result["files"]}
        if result.get("selection") is not None:
            rows["selection"] = result["selection"]
        if result.get("target") is not None:
            rows["target"] = result["target"]
        click.echo(json.dumps(rows if merged is None else rows | {"summary": merged}))


def _export(run_dir: Path, csv_file: str | None, tensorboard_dir: str | None) -> list[str]:
    """--csv and --tensorboard: the files written."""
    from peernet.study.export import write_csv, write_tensorboard

    files = []
    if csv_file is not None:
        rows = write_csv(run_dir, Path(csv_file))
        click.echo(f"exported {rows} rows to {csv_file}", err=True)
        files.append(csv_file)
    if tensorboard_dir is not None:
        written = write_tensorboard(run_dir, Path(tensorboard_dir))
        click.echo(f"exported {len(written)} TensorBoard event files to {tensorboard_dir}", err=True)
        files += [str(f) for f in written]
    return files
