"""``peernet sweep`` and ``peernet report``: run a study grid of simulations, then tabulate and plot it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from peernet.cli.common import log_level_option, reports_errors
from peernet.errors import ConfigError


@click.command("sweep")
@click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False),
              help="study TOML file: [base] settings, [grid] axes, optional [selection] (see docs/study.md)")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="sweep directory (default: runs/sweep-<name>); rerunning into it resumes the sweep")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="cells run in parallel, one process and one torch thread each (default: number of cores; "
                   "1: in this process)")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when present), cpu, cuda or cuda:N for every cell's simulator")
@click.option("--json", "as_json", is_flag=True, help="print what was run as one JSON object on the last line")
@click.option("--quiet", is_flag=True, help="no progress line")
@log_level_option()
@reports_errors
def sweep(config_file: str, out: str | None, jobs: int | None, device: str, as_json: bool, quiet: bool) -> None:
    """Run every cell of a study (the cartesian product of its grid), each into DIR/cells/<id>/.

    The whole file is validated before anything runs. Finished cells are skipped, so an interrupted sweep
    (Ctrl-C) resumes where it stopped when run again. Then: peernet report DIR.
    """
    from peernet.device import resolve_device
    from peernet.rundir import claim_run_dir
    from peernet.study.grid import load_study
    from peernet.study.sweep import default_jobs, preflight, run_sweep

    study = load_study(config_file)
    out_dir = Path(out) if out else Path("runs") / ("sweep-" + re.sub(r"[^A-Za-z0-9._-]+", "-", study.name))
    try:
        resolve_device(device)  # what run_sweep checks first, here before the directory is claimed
        preflight(study)
        # Resumable by design: finished cells are kept. The lock keeps a second sweep out while this one runs.
        with claim_run_dir(out_dir, resume=True):
            result = run_sweep(study, out_dir, jobs=jobs or default_jobs(), progress=not quiet, device=device)
    except ConfigError as exc:
        if exc.key == "device" and exc.file is None:
            raise click.BadParameter(exc.reason, param_hint="'--device'") from None
        raise
    click.echo(f"{study.name}: {result.finished}/{result.total} cells finished ({len(result.ran)} run now, "
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
@log_level_option()
@reports_errors
def report(run_dir: str, out: str | None, as_json: bool, merge: bool, data_dir: str | None, csv_file: str | None,
           tensorboard_dir: str | None) -> None:
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
    result = write_report(run_dir, out)
    result["files"] += exported
    click.echo(result["table"], err=as_json)
    click.echo("wrote " + ", ".join(result["files"]), err=True)
    if as_json:
        rows = {"kind": result["kind"], "rows": result["rows"], "files": result["files"]}
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
