"""`peernet report --csv / --tensorboard`: every run's per-round metrics, one row (or step) per node and round."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from peernet.errors import ConfigError
from peernet.metrics.jsonl import read_jsonl
from peernet.metrics.tfevents import EventWriter
from peernet.rundir import SETTINGS_NAME

#: Columns first in this order when present; the other metrics follow, sorted.
LEADING = ("epoch", "loss", "test_accuracy", "distance_to_optimum", "consensus_distance", "neighbour_distance",
           "compute_s", "wait_s", "mix_s", "used", "excluded", "bytes_out", "bytes_in")
KEYS = ("run", "node", "round")


def metric_files(run_dir: Path) -> list[tuple[str, str, Path]]:
    """(run, node, metrics.jsonl) of a sweep (one run per cell), a `peernet simulate` run (the whole cluster,
    node "") or a daemon run (one file per node); ConfigError for anything else."""
    if (run_dir / "sweep.json").is_file():
        cells = sorted(p for p in (run_dir / "cells").glob("*/metrics.jsonl"))
        return [(p.parent.name, "", p) for p in cells]
    if (run_dir / SETTINGS_NAME).is_file() and (run_dir / "metrics.jsonl").is_file():
        return [(run_dir.name, "", run_dir / "metrics.jsonl")]
    nodes = run_dir / "nodes"
    if nodes.is_dir():
        found = [(int(p.parent.name.removeprefix("node")), p) for p in nodes.glob("node*/metrics.jsonl")
                 if p.parent.name.removeprefix("node").isdigit()]
        return [(run_dir.name, str(i), p) for i, p in sorted(found)]
    raise ConfigError("not a sweep (sweep.json), `peernet simulate --out` (settings.json, metrics.jsonl) or "
                      "daemon run directory (nodes/node*/metrics.jsonl)", file=str(run_dir))


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    # ints stay ints (byte counts, neighbours used): a CSV reader gets 1808, not 1808.0
    return {k: v for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)
            and k != "round" and math.isfinite(v)}


def rounds_of(path: Path) -> dict[int, dict[str, float]]:
    """Round -> its numeric metrics: the round record merged with that round's evaluation. A round recorded
    twice (a node that rejoined from an older checkpoint did it again) keeps what was recorded last."""
    by_round: dict[int, dict[str, float]] = {}
    for record in read_jsonl(path):
        if record.get("event") in ("round", "eval") and isinstance(record.get("round"), int):
            row = by_round.setdefault(record["round"], {})
            if record["event"] == "round":
                row.clear()  # a redone round: the earlier attempt's numbers are not this round's
            row.update(_numbers(record))
    return by_round


def export_rows(run_dir: Path) -> Iterator[dict[str, Any]]:
    """One row per run, node and round, in that order."""
    for run, node, path in metric_files(run_dir):
        for round_, values in sorted(rounds_of(path).items()):
            yield {"run": run, "node": node, "round": round_, **values}


def write_csv(run_dir: Path, out: Path) -> int:
    """Write every row to ``out`` (columns: run, node, round, then the metrics); returns the number of rows."""
    rows = list(export_rows(run_dir))
    if not rows:
        raise ConfigError("no per-round metrics to export yet", file=str(run_dir))
    metrics = {k for row in rows for k in row} - set(KEYS)
    columns = [*KEYS, *(k for k in LEADING if k in metrics), *sorted(metrics - set(LEADING))]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def write_tensorboard(run_dir: Path, out: Path) -> list[Path]:
    """One event file per node (daemon runs: ``out/node<i>/``), per cell (sweeps: ``out/<cell>/``) or for the
    run (``out/``); tag = metric, step = round, wall time = the record's time where it has one."""
    files = []
    for run, node, path in metric_files(run_dir):
        sub = f"node{node}" if node else (run if (run_dir / "sweep.json").is_file() else "")
        rounds = rounds_of(path)
        if not rounds:
            continue
        with EventWriter(out / sub if sub else out) as writer:
            for round_, values in sorted(rounds.items()):
                wall = values.pop("time", None)
                writer.scalars(round_, values, wall_time=wall)
            files.append(writer.path)
    if not files:
        raise ConfigError("no per-round metrics to export yet", file=str(run_dir))
    return files
