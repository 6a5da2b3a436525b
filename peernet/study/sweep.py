"""Run a study: one directory per cell, resumable, in parallel processes, with optional step-size selection."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, TextIO

from peernet.atomic import write_atomic
from peernet.config import RunSettings
from peernet.errors import SimulationError
from peernet.rundir import settings_digest
from peernet.sim.workers import available_cores
from peernet.study.grid import Cell, Study

CELLS_DIR = "cells"
PARTIAL = ".partial"


@dataclasses.dataclass
class SweepResult:
    """What one invocation did: cells it ran, cells it found finished, failed cells, whether it stopped early."""

    out: Path
    total: int
    ran: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)
    interrupted: bool = False

    @property
    def finished(self) -> int:
        return len(self.ran) + len(self.skipped)


def default_jobs() -> int:
    """One process per usable core (each runs one torch thread)."""
    return available_cores()


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, so a reader never sees half a file."""
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def is_finished(cells_dir: Path, cell_id: str, settings: RunSettings | None = None) -> bool:
    """The cell has its summary.json and, given ``settings``, that summary was written with these settings: a
    cell left by a sweep whose study file has changed since (same cell id, other base settings) is run again."""
    path = cells_dir / cell_id / "summary.json"
    if not path.is_file():
        return False
    if settings is None:
        return True
    try:
        written = json.loads(path.read_text()).get("settings_digest")
    except (OSError, ValueError, AttributeError):
        return False
    return written in (None, settings_digest(settings))  # None: written before summaries carried the digest


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
        summary["status"] = "ok"
    except SimulationError as exc:
        summary = {key: None for key in SUMMARY_KEYS} | {"algorithm": settings.algorithm, "lr": settings.step_size,
                                                       "settings_digest": settings_digest(settings),
                                                       "status": "failed", "error": str(exc)}
    summary["cell"] = cell_id
    write_json(partial / "summary.json", summary)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return summary


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _init_worker() -> None:
    # Only the parent decides what Ctrl-C means; the workers share the cores, one torch thread each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(1)


def choose(study: Study, summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The selection rule: per combination of the other axes, the tuned value whose seed cell scores best.

    Ties go to the value listed first; a failed or missing cell never wins; a group without any score
    gets no choice (and so no further seeds).
    """
    sel = study.selection
    assert sel is not None
    groups: dict[str, list[Cell]] = {}
    for cell in study.cells:
        if cell.settings.seed == sel.on_seed:
            groups.setdefault(cell.group(("seed", sel.tune)), []).append(cell)
    choices = []
    for members in groups.values():
        candidates: list[dict[str, Any]] = [{"value": c.labels[sel.tune], "cell": c.id,
                       "metric": summaries.get(c.id, {}).get(sel.metric)} for c in members]
        scored = [c for c in candidates if c["metric"] is not None]
        best = max(scored, key=lambda c: float(c["metric"])) if scored else None
        choices.append({"group": {k: v for k, v in members[0].labels.items() if k not in ("seed", sel.tune)},
                        "chosen": best["value"] if best else None, "chosen_cell": best["cell"] if best else None,
                        "candidates": candidates})
    return choices


class _Line:
    """One progress line on stderr: cells done / total, failures, ETA from the cells run so far."""

    def __init__(self, name: str, total: int, done: int, stream: TextIO, enabled: bool) -> None:
        self.name, self.total, self.done, self.stream, self.enabled = name, total, done, stream, enabled
        self.ran = 0
        self.failed = 0
        self.start = time.monotonic()
        self.tty = stream.isatty()

    def advance(self, failed: bool) -> None:
        self.done += 1
        self.ran += 1
        self.failed += failed
        if not self.enabled:
            return
        rate = self.ran / max(time.monotonic() - self.start, 1e-9)
        left = (self.total - self.done) / rate
        eta = f"{left / 60:.0f}m{left % 60:02.0f}s" if left >= 60 else f"{left:.0f}s"
        line = f"sweep {self.name}: {self.done}/{self.total} cells ({self.failed} failed) eta {eta}"
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


class _Sweep:
    def __init__(self, study: Study, out: Path, jobs: int, progress: bool, limit: int | None,
                 stream: TextIO, device: str) -> None:
        self.study, self.out, self.jobs, self.limit, self.stream = study, out, jobs, limit, stream
        self.device = device
        # The cores are shared out: jobs processes, each with the worker threads left to it.
        self.threads = max(1, default_jobs() // max(1, jobs))
        self.cells_dir = out / CELLS_DIR
        self.summaries: dict[str, dict[str, Any]] = {}
        sel = study.selection
        if sel is None:
            planned = len(study.cells)
        else:
            tune = [c for c in study.cells if c.settings.seed == sel.on_seed]
            groups = {c.group(("seed", sel.tune)) for c in tune}
            planned = len(tune) + len(groups) * len({c.settings.seed for c in study.cells} - {sel.on_seed})
        self.result = SweepResult(out=out, total=planned)
        self.line = _Line(study.name, planned, 0, stream, progress)
        self.pool: ProcessPoolExecutor | None = None  # started on first need, kept for the selection's second phase

    def log(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def run(self) -> SweepResult:
        # `kill PID` (SIGTERM) stops a sweep as Ctrl-C does: running cells are ended and their partial
        # directories removed. Python's default for SIGTERM would end the parent alone and leave the workers
        # training orphaned cells.
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return self._run()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if self.pool is not None:
                self.pool.shutdown()

    def _run(self) -> SweepResult:
        sel = self.study.selection
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        for partial in self.cells_dir.glob("*" + PARTIAL):  # left by an interrupted run: start them over
            shutil.rmtree(partial)
        (self.out / "results.jsonl").write_text("")  # rebuilt from the cells below, in plan order
        first = [c for c in self.study.cells if sel is None or c.settings.seed == sel.on_seed]
        phases = {c.id: "grid" if sel is None else "tune" for c in first}
        self._write_plan(first, phases, set())
        self._phase(first, phases)
        if sel is None or self.result.interrupted:
            return self.result
        choices = choose(self.study, self.summaries)
        write_json(self.out / "selection.json", {**dataclasses.asdict(sel), "choices": choices})
        by_id = {c.id: c for c in self.study.cells}
        others = ("seed", sel.tune)
        value = {by_id[c["chosen_cell"]].group(others): c["chosen"] for c in choices if c["chosen_cell"]}
        finals = [c for c in self.study.cells
                  if c.settings.seed != sel.on_seed and value.get(c.group(others)) == c.labels[sel.tune]]
        chosen = {c["chosen_cell"] for c in choices if c["chosen_cell"]}
        phases.update({c.id: "final" for c in finals})
        self.result.total = self.line.total = len(first) + len(finals)
        self._write_plan(first + finals, phases, chosen)
        self._phase(finals, phases)
        return self.result

    def _write_plan(self, cells: list[Cell], phases: dict[str, str], chosen: set[str]) -> None:
        study = self.study
        write_json(self.out / "sweep.json", {
            "name": study.name, "study_file": str(Path(study.source).resolve()), "study": study.raw,
            "axes": [{"name": a.name, "labels": list(a.labels), "table": a.table, "fields": sorted(a.fields)}
                     for a in study.axes],
            "selection": dataclasses.asdict(study.selection) if study.selection else None,
            "cells": [{"id": c.id, "phase": phases[c.id], "chosen": c.id in chosen, "labels": c.labels,
                       "settings": dataclasses.asdict(c.settings)} for c in cells]})

    def _phase(self, cells: list[Cell], phases: dict[str, str]) -> None:
        todo, skipped = [], 0
        for cell in cells:
            if is_finished(self.cells_dir, cell.id, cell.settings):
                summary = json.loads((self.cells_dir / cell.id / "summary.json").read_text())
                self._record(cell, summary, phases[cell.id])
                self.result.skipped.append(cell.id)
                self.line.done += 1
                skipped += 1
            else:
                shutil.rmtree(self.cells_dir / cell.id, ignore_errors=True)  # unfinished: start it over
                todo.append(cell)
        if skipped:
            self.log(f"sweep {self.study.name}: {skipped} cells already finished, running {len(todo)}")
        if self.limit is not None:
            budget = max(0, self.limit - len(self.result.ran))
            self.result.interrupted = len(todo) > budget
            todo = todo[:budget]
        try:
            self._execute(todo, phases)
        except BaseException as exc:
            for partial in self.cells_dir.glob("*" + PARTIAL):  # cells cut short; finished ones stay
                shutil.rmtree(partial, ignore_errors=True)
            if not isinstance(exc, KeyboardInterrupt):
                raise
            self.result.interrupted = True

    def _execute(self, todo: list[Cell], phases: dict[str, str]) -> None:
        if self.jobs <= 1 or len(todo) <= 1:
            for cell in todo:
                summary = run_cell(cell.settings, str(self.cells_dir), cell.id, self.device, self.threads)
                self._done(cell, summary, phases[cell.id])
            return
        if self.pool is None:
            # Spawn, not fork: a forked child would inherit torch's thread pools in an undefined state.
            self.pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker)
        pool = self.pool
        try:
            futures = {pool.submit(run_cell, c.settings, str(self.cells_dir), c.id, self.device, self.threads): c
                       for c in todo}
            for future in as_completed(futures):
                cell = futures[future]
                self._done(cell, future.result(), phases[cell.id])
        except BaseException:
            # Ctrl-C or a cell that raised: drop queued cells and end running ones (their .partial is removed).
            workers = list((pool._processes or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in workers:
                proc.terminate()
            for proc in workers:
                proc.join()
            self.pool = None
            raise

    def _done(self, cell: Cell, summary: dict[str, Any], phase: str) -> None:
        self._record(cell, summary, phase)
        self.result.ran.append(cell.id)
        self.line.advance(summary.get("status") == "failed")

    def _record(self, cell: Cell, summary: dict[str, Any], phase: str) -> None:
        self.summaries[cell.id] = summary
        if summary.get("status") == "failed":
            self.result.failed.append(cell.id)
        line = {"cell": cell.id, "phase": phase, "labels": cell.labels,
                "settings": dataclasses.asdict(cell.settings), "summary": summary}
        with (self.out / "results.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, default=str) + "\n")


def preflight(study: Study) -> None:
    """Fail before anything is written if a dataset's files are missing (each cell would fail on them)."""
    from peernet.data.datasets import resolve_data_dir

    for dataset, data_dir in sorted({(c.settings.dataset, c.settings.data_dir or "") for c in study.cells}):
        if dataset != "quadratic":
            resolve_data_dir(dataset, data_dir or None)


def run_sweep(study: Study, out: str | Path, *, jobs: int = 1, progress: bool = True, limit: int | None = None,
              stream: TextIO | None = None, device: str = "auto") -> SweepResult:
    """Run every unfinished cell of ``study`` under ``out`` (finished cells are kept and skipped).

    ``jobs`` > 1 runs cells in that many spawned processes; ``device`` is where each cell's simulator runs.
    ``limit`` stops after that many newly run cells (the result then says ``interrupted``), as Ctrl-C does;
    running the sweep again resumes it.
    """
    from peernet.device import resolve_device

    resolve_device(device)  # a missing GPU is reported before any cell starts
    preflight(study)
    sweep = _Sweep(study, Path(out), jobs, progress, limit, stream or sys.stderr, device)
    return sweep.run()

