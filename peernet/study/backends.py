"""Where a sweep's cells run: this process, a local pool of spawned processes, or a Ray cluster."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Protocol

from peernet.sim.workers import available_cores
from peernet.study.cells import run_cell
from peernet.study.grid import Cell

BACKENDS = ("local", "ray")
RAY_EXTRA = "pip install 'peernet[ray]'"

#: Called on the driver for each cell that finished, with its summary, once the cell's directory is in place.
Done = Callable[[Cell, dict[str, Any]], None]


class Backend(Protocol):
    """Runs cells into ``cells_dir/<id>/`` and reports each finished one; an exception (Ctrl-C included) ends
    the cells still running before it propagates, so only finished cells are left."""

    def run(self, todo: list[Cell], cells_dir: Path, done: Done) -> None: ...

    def close(self) -> None: ...


def default_jobs() -> int:
    """One process per usable core (each runs one torch thread)."""
    return available_cores()


def _init_worker() -> None:
    # Only the parent decides what Ctrl-C means; the workers share the cores, one torch thread each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(1)


class LocalBackend:
    """``jobs`` spawned processes (``jobs`` 1: this process), each cell with ``threads`` simulator threads."""

    def __init__(self, jobs: int, device: str, threads: int | None = None) -> None:
        self.jobs, self.device = jobs, device
        # The cores are shared out: jobs processes, each with the worker threads left to it.
        self.threads = threads or max(1, default_jobs() // max(1, jobs))
        self.pool: ProcessPoolExecutor | None = None  # started on first need, kept for the sweep's later phases

    def run(self, todo: list[Cell], cells_dir: Path, done: Done) -> None:
        if self.jobs <= 1 or len(todo) <= 1:
            for cell in todo:
                done(cell, run_cell(cell.settings, str(cells_dir), cell.id, self.device, self.threads))
            return
        if self.pool is None:
            # Spawn, not fork: a forked child would inherit torch's thread pools in an undefined state.
            self.pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker)
        pool = self.pool
        try:
            futures = {pool.submit(run_cell, c.settings, str(cells_dir), c.id, self.device, self.threads): c
                       for c in todo}
            for future in as_completed(futures):
                done(futures[future], future.result())
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

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


def open_backend(name: str, *, jobs: int | None, device: str, threads: int | None = None,
                 address: str | None = None) -> Backend:
    """The backend ``name`` ("local" or "ray"); a Ray one connects to its cluster (or starts a local one) here."""
    if name == "ray":
        from peernet.study.ray_backend import RayBackend

        return RayBackend(address=address, device=device, threads=threads or 1, jobs=jobs)
    return LocalBackend(jobs or default_jobs(), device, threads)
