"""``peernet simulate``: N nodes in one process, vectorised, with metrics and a summary."""

from __future__ import annotations

import json
from typing import Any

import click

from peernet.cli.common import reports_errors
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
              help="directory for settings.json, metrics.jsonl (per round and per evaluation) and summary.json")
@click.option("--mode", type=click.Choice(["auto", "vectorized", "loop"]), default="auto", show_default=True,
              help="loop: node by node, gradients on worker threads; vectorized: nodes batched in one call; "
                   "auto: vectorized on a GPU and for the quadratic task, loop for image models on a CPU")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when present), cpu, cuda or cuda:N: data, parameters, state and mixing live there")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="worker threads on a CPU, each running torch with one thread (0: every available core)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as one JSON object on the last line")
@click.option("--quiet", is_flag=True, help="no progress bar")
@reports_errors
def simulate(out: str | None, mode: str, device: str, threads: int, as_json: bool, quiet: bool,
             **kwargs: Any) -> None:
    """Simulate a decentralized run: every node of the topology in one process, same rule code as the daemon.

    Example: peernet simulate --algorithm momentum-tracking --topology ring --nodes 8
    --dataset fashion-mnist --partition classes --classes-per-node 2 --epochs 2 --out runs/mt
    """
    from peernet.errors import ConfigError
    from peernet.sim.run import run_simulation

    settings = pop_settings(kwargs)
    try:
        summary = run_simulation(settings, out, mode=mode, progress=not quiet,  # type: ignore[arg-type]
                                 device=device, threads=threads)
    except ConfigError as exc:
        if exc.key == "device" and exc.file is None:
            raise click.BadParameter(exc.reason, param_hint="'--device'") from None
        raise
    click.echo(format_summary(summary), err=as_json)  # --json: stdout holds the JSON only
    if as_json:
        click.echo(json.dumps(summary))
