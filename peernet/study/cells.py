"""One sweep cell on disk: running it into ``cells/<id>.partial``, storing it atomically, telling it is finished."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from peernet.atomic import write_atomic
from peernet.config import RunSettings
from peernet.errors import SimulationError
from peernet.metrics.jsonl import read_jsonl
from peernet.rundir import settings_digest
from peernet.study.grid import SELECTION_METRICS

CELLS_DIR = "cells"
PARTIAL = ".partial"
SUMMARY = "summary.json"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, so a reader never sees half a file."""
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def is_finished(cells_dir: Path, cell_id: str, settings: RunSettings | None = None) -> bool:
    """The cell has its summary.json and, given ``settings``, that summary was written with these settings: a
    cell left by a sweep whose study file has changed since (same cell id, other base settings) is run again."""
    path = cells_dir / cell_id / SUMMARY
    if not path.is_file():
        return False
    if settings is None:
        return True
    try:
        written = json.loads(path.read_text()).get("settings_digest")
    except (OSError, ValueError, AttributeError):
        return False
    return written in (None, settings_digest(settings))  # None: written before summaries carried the digest


def _selection_scores(run_dir: Path) -> dict[str, float]:
    """Selection metrics the last evaluation has but the simulator's summary leaves out (the quadratic task's
    averaged_model_loss), so that the selection reads every score from the cell's summary."""
    path = run_dir / "metrics.jsonl"
    evals = [r for r in read_jsonl(path) if r.get("event") == "eval"] if path.is_file() else []
    last = evals[-1] if evals else {}
    return {key: float(last[key]) for key in SELECTION_METRICS if last.get(key) is not None}


def run_cell(settings: RunSettings, cells_dir: str, cell_id: str, device: str = "auto",
             threads: int = 1) -> dict[str, Any]:
    """Run one cell into ``<id>.partial`` and rename it to ``<id>`` when complete (the rename is atomic).

    A diverging run is a result too (status "failed", with the reason): it is finished and not retried.
    """
    from peernet.sim.run import SUMMARY_KEYS, run_simulation

    partial = Path(cells_dir) / (cell_id + PARTIAL)
    final = Path(cells_dir) / cell_id
    shutil.rmtree(partial, ignore_errors=True)
    try:
        summary = run_simulation(settings, partial, progress=False, device=device, threads=threads)
        scores = {k: v for k, v in _selection_scores(partial).items() if k not in summary}
        summary = summary | scores | {"status": "ok"}
    except SimulationError as exc:
        summary = {key: None for key in SUMMARY_KEYS} | {"algorithm": settings.algorithm, "lr": settings.step_size,
                                                       "settings_digest": settings_digest(settings),
                                                       "status": "failed", "error": str(exc)}
    summary["cell"] = cell_id
    write_json(partial / SUMMARY, summary)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return summary


def read_cell(cell_dir: Path) -> dict[str, bytes]:
    """Every file of a finished cell directory by its path inside it: what a remote worker sends back."""
    return {p.relative_to(cell_dir).as_posix(): p.read_bytes() for p in sorted(cell_dir.rglob("*")) if p.is_file()}


def store_cell(cells_dir: Path, cell_id: str, files: dict[str, bytes]) -> None:
    """Write a cell that ran elsewhere as run_cell would have: into ``<id>.partial``, summary.json last, then
    renamed to ``<id>``, so an interruption never leaves a cell that looks finished."""
    partial = cells_dir / (cell_id + PARTIAL)
    final = cells_dir / cell_id
    shutil.rmtree(partial, ignore_errors=True)
    for name in sorted(files, key=lambda n: n == SUMMARY):
        if Path(name).is_absolute() or ".." in Path(name).parts:  # only ever written inside the cell
            raise SimulationError(f"cell {cell_id}: a worker sent a file outside its directory: {name!r}")
        path = partial / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[name])
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
