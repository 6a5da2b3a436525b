"""``peernet simulate``: N nodes in one process, vectorised, with metrics and a summary."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import click

from peernet.cli.common import log_level_option, reports_errors
from peernet.cli.settings_opts import pop_settings, settings_options


def format_summary(summary: dict[str, Any]) -> str:
    """A two-column table of the summary for humans; numbers to 4 significant digits."""
    rows = []
    for key, value in summary.items():
        if isinstance(value, float):
            text = f"{value:.4g}"
        elif value is None:
            text = "-"
        else:
            text = str(value)
        rows.append((key, text))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


@click.command("simulate")
@settings_options
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="directory for settings.json, metrics.jsonl (per round and per evaluation) and summary.json; "
                   "refused if it has files, unless --force")
@click.option("--force", is_flag=True,
              help="delete what an earlier run left in --out first (only a peernet run directory is emptied)")
@click.option("--mode", type=click.Choice(["auto", "vectorized", "loop", "protocol"]), default="auto",
              show_default=True,
              help="loop: node by node, gradients on worker threads; vectorized: nodes batched in one call; "
                   "auto: vectorized on a GPU and for the quadratic task, loop for image models on a CPU; "
                   "protocol: N real daemons (exchange, deadlines, edge bookkeeping, faults) in one process, "
                   "deterministic from the seed")
@click.option("--crash", "crashes", multiple=True, metavar="NODE@ROUND",
              help="protocol mode: node NODE dies for good after ROUND rounds (repeatable)")
@click.option("--node-options", type=click.Path(dir_okay=False), default=None,
              help="protocol mode: TOML file of node config keys for every node (deadline_*, rollback, [faults], "
                   "...; docs/configuration.md)")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when present), cpu, cuda or cuda:N: data, parameters, state and mixing live there")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="worker threads on a CPU, each running torch with one thread (0: every available core)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as one JSON object on the last line")
@click.option("--quiet", is_flag=True, help="no progress bar")
@log_level_option()
@reports_errors
def simulate(out: str | None, force: bool, mode: str, crashes: tuple[str, ...], node_options: str | None,
             device: str, threads: int, as_json: bool, quiet: bool, **kwargs: Any) -> None:
    """Simulate a decentralized run: every node of the topology in one process, same rule code as the daemon.

    Example: peernet simulate --algorithm momentum-tracking --topology ring --nodes 8
    --dataset fashion-mnist --partition classes --classes-per-node 2 --epochs 2 --out runs/mt
    """
    from peernet.config import resolve_topology
    from peernet.device import resolve_device
    from peernet.errors import ConfigError
    from peernet.rundir import claim_run_dir

    settings = pop_settings(kwargs)
    if mode != "protocol" and (crashes or node_options):
        raise click.BadParameter("only with --mode protocol", param_hint="'--crash' / '--node-options'")
    parsed = _parse_crashes(crashes)
    try:
        if mode != "protocol":
            resolve_device(device)  # a missing GPU or a bad topology is refused before --out is touched
        resolve_topology(settings, key_files=False)
        with claim_run_dir(out, force=force) if out is not None else contextlib.nullcontext():
            summary = _run(settings, out, mode, parsed, node_options, device, threads, progress=not quiet)
    except ConfigError as exc:
        if exc.key == "device" and exc.file is None:
            raise click.BadParameter(exc.reason, param_hint="'--device'") from None
        raise
    click.echo(format_summary(summary), err=as_json)  # --json: stdout holds the JSON only
    if as_json:
        click.echo(json.dumps(summary))


def _run(settings: Any, out: str | None, mode: str, crashes: dict[int, int], node_options: str | None,
         device: str, threads: int, *, progress: bool) -> dict[str, Any]:
    from peernet.sim.run import run_simulation

    if mode == "protocol":
        return _protocol(settings, out, crashes, node_options, progress=progress)
    return run_simulation(settings, out, mode=mode, progress=progress,  # type: ignore[arg-type]
                          device=device, threads=threads)


def _parse_crashes(specs: tuple[str, ...]) -> dict[int, int]:
    crashes: dict[int, int] = {}
    for spec in specs:
        node, sep, round_ = spec.partition("@")
        if not (sep and node.isdigit() and round_.isdigit()):
            raise click.BadParameter(f"{spec!r} is not NODE@ROUND (e.g. 3@200)", param_hint="'--crash'")
        crashes[int(node)] = int(round_)
    return crashes


def _protocol(settings: Any, out: str | None, crashes: dict[int, int], options_file: str | None, *,
              progress: bool) -> dict[str, Any]:
    import tempfile

    from peernet.config import read_toml
    from peernet.sim.protocol import run_protocol

    options = read_toml(options_file) if options_file is not None else {}
    if out is not None:
        return run_protocol(settings, out, node_options=options, crashes=crashes, progress=progress,
                            options_source=options_file)
    with tempfile.TemporaryDirectory(prefix="peernet-protocol-") as tmp:
        return run_protocol(settings, tmp, node_options=options, crashes=crashes, progress=progress,
                            options_source=options_file)

