"""Run a study: one directory per cell, resumable, on a local pool or a Ray cluster, with step-size selection."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from peernet.study.backends import Backend, open_backend
from peernet.study.cells import CELLS_DIR, PARTIAL, is_finished, write_json
from peernet.study.grid import Cell, Study
from peernet.study.selection import Selector


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


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


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
    def __init__(self, study: Study, out: Path, backend: Backend, progress: bool, limit: int | None,
                 stream: TextIO) -> None:
        self.study, self.out, self.backend, self.limit, self.stream = study, out, backend, limit, stream
        self.cells_dir = out / CELLS_DIR
        self.summaries: dict[str, dict[str, Any]] = {}
        self.selector = Selector(study) if study.selection else None
        # What sweep.json lists: every cell planned so far, with its phase (grid, rung, tune or final).
        self.plan: list[Cell] = []
        self.phases: dict[str, str] = {}
        planned = self.selector.remaining(0) if self.selector else len(study.cells)
        self.result = SweepResult(out=out, total=planned)
        self.line = _Line(study.name, planned, 0, stream, progress)

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

    def _run(self) -> SweepResult:
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        for partial in self.cells_dir.glob("*" + PARTIAL):  # left by an interrupted run: start them over
            shutil.rmtree(partial)
        (self.out / "results.jsonl").write_text("")  # rebuilt from the cells below, in plan order
        if self.selector is None:
            self._plan_and_run(list(self.study.cells), "grid")
            return self.result
        selector = self.selector
        k = 0
        while not self.result.interrupted and (rung := selector.rung(k)):
            self._plan_and_run([c for cells in rung.values() for c in cells], "rung")
            if not self.result.interrupted:
                selector.cut(k, rung, self.summaries)
                k += 1
                self._retotal(selector.remaining(k))
        if self.result.interrupted:
            return self.result
        self._plan_and_run(selector.finalists(), "tune")
        if not self.result.interrupted:
            self._finals(selector)
        return self.result

    def _finals(self, selector: Selector) -> None:
        """The choice per group, written to selection.json, then the other seeds at the chosen value."""
        sel = self.study.selection
        assert sel is not None
        choices = selector.choices(self.summaries)
        write_json(self.out / "selection.json", {**dataclasses.asdict(sel), "choices": choices})
        by_id = {c.id: c for c in self.study.cells}
        others = ("seed", sel.tune)
        value = {by_id[c["chosen_cell"]].group(others): c["chosen"] for c in choices if c["chosen_cell"]}
        finals = [c for c in self.study.cells
                  if c.settings.seed != sel.on_seed and value.get(c.group(others)) == c.labels[sel.tune]]
        self._retotal(len(finals))
        self._plan_and_run(finals, "final", chosen={c["chosen_cell"] for c in choices if c["chosen_cell"]})

    def _retotal(self, remaining: int) -> None:
        """The planned total once a phase has decided what follows: the cells done plus those still to run."""
        self.result.total = self.line.total = self.line.done + remaining

    def _plan_and_run(self, cells: list[Cell], phase: str, chosen: set[str] | None = None) -> None:
        self.plan += cells
        self.phases.update({c.id: phase for c in cells})
        self._write_plan(chosen or set())
        self._phase(cells)

    def _write_plan(self, chosen: set[str]) -> None:
        study = self.study
        write_json(self.out / "sweep.json", {
            "name": study.name, "study_file": str(Path(study.source).resolve()), "study": study.raw,
            "axes": [{"name": a.name, "labels": list(a.labels), "table": a.table, "fields": sorted(a.fields)}
                     for a in study.axes],
            "selection": dataclasses.asdict(study.selection) if study.selection else None,
            "cells": [{"id": c.id, "phase": self.phases[c.id], "chosen": c.id in chosen, "labels": c.labels,
                       "settings": dataclasses.asdict(c.settings)} for c in self.plan]})

    def _phase(self, cells: list[Cell]) -> None:
        todo, skipped = [], 0
        for cell in cells:
            if is_finished(self.cells_dir, cell.id, cell.settings):
                summary = json.loads((self.cells_dir / cell.id / "summary.json").read_text())
                self._record(cell, summary)
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
            self.backend.run(todo, self.cells_dir, self._done)
        except BaseException as exc:
            for partial in self.cells_dir.glob("*" + PARTIAL):  # cells cut short; finished ones stay
                shutil.rmtree(partial, ignore_errors=True)
            if not isinstance(exc, KeyboardInterrupt):
                raise
            self.result.interrupted = True

    def _done(self, cell: Cell, summary: dict[str, Any]) -> None:
        self._record(cell, summary)
        self.result.ran.append(cell.id)
        self.line.advance(summary.get("status") == "failed")

    def _record(self, cell: Cell, summary: dict[str, Any]) -> None:
        self.summaries[cell.id] = summary
        if summary.get("status") == "failed":
            self.result.failed.append(cell.id)
        line = {"cell": cell.id, "phase": self.phases[cell.id], "labels": cell.labels,
                "settings": dataclasses.asdict(cell.settings), "summary": summary}
        with (self.out / "results.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, default=str) + "\n")


def preflight(study: Study) -> None:
    """Fail before anything is written if a dataset's files are missing (each cell would fail on them)."""
    from peernet.data.datasets import resolve_data_dir

    for dataset, data_dir in sorted({(c.settings.dataset, c.settings.data_dir or "") for c in study.cells}):
        if dataset != "quadratic":
            resolve_data_dir(dataset, data_dir or None)


def run_sweep(study: Study, out: str | Path, *, jobs: int | None = None, progress: bool = True,
              limit: int | None = None, stream: TextIO | None = None, device: str = "auto",
              backend: str | Backend = "local", address: str | None = None, threads: int | None = None) -> SweepResult:
    """Run every unfinished cell of ``study`` under ``out`` (finished cells are kept and skipped).

    ``backend`` "local": ``jobs`` > 1 runs cells in that many spawned processes (default: one after the other
    in this process); "ray": as Ray tasks on the cluster at ``address``, at most ``jobs`` at a time (default:
    as many as its resources allow; peernet.study.ray_backend); or a Backend already opened, which the caller
    closes. ``device`` is where each cell's simulator runs, ``threads`` its worker threads. ``limit`` stops
    after that many newly run cells (the result then says ``interrupted``), as Ctrl-C does; running the
    sweep again resumes it.
    """
    if isinstance(backend, str):
        if backend == "local":
            from peernet.device import resolve_device

            resolve_device(device)  # a missing GPU is reported before any cell starts
            preflight(study)
            jobs = jobs or 1
        opened = open_backend(backend, jobs=jobs, device=device, threads=threads, address=address)
        try:
            return run_sweep(study, out, progress=progress, limit=limit, stream=stream, backend=opened)
        finally:
            opened.close()
    return _Sweep(study, Path(out), backend, progress, limit, stream or sys.stderr).run()
