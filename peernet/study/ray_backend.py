"""Sweep cells as Ray tasks: one task per cell, its CPUs and GPU declared, its files sent back to the driver."""

from __future__ import annotations

import re
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from peernet.config import RunSettings
from peernet.errors import ConfigError
from peernet.study.backends import RAY_EXTRA, Done
from peernet.study.cells import read_cell, run_cell, store_cell
from peernet.study.grid import Cell

#: Seconds between checks for finished tasks: the driver's signal handlers (Ctrl-C, SIGTERM) run in between.
POLL_S = 0.5
#: Seconds to wait for the cluster's address to accept a connection.
CONNECT_TIMEOUT_S = 5.0
#: Seconds cancelled tasks get to unwind (and remove their temporary directories) before they are killed.
CANCEL_GRACE_S = 10.0


def run_remote(settings: RunSettings, cell_id: str, device: str, threads: int) -> tuple[dict[str, Any],
                                                                                       dict[str, bytes]]:
    """The task: run the cell in a temporary directory of the worker's machine and return its summary and
    files. The driver writes them, so a cluster needs no filesystem shared with the driver."""
    import torch

    torch.set_num_threads(1)  # as a local pool worker: the cell's parallelism is its simulator threads
    with tempfile.TemporaryDirectory(prefix="peernet-cell-") as tmp:
        summary = run_cell(settings, tmp, cell_id, device, threads)
        return summary, read_cell(Path(tmp) / cell_id)


def placement(device: str, cluster_gpus: float) -> tuple[str, int]:
    """The device a task runs on and the GPUs it reserves. Ray hands a task its GPU as the only visible one,
    so any CUDA device is ``cuda`` inside it; ``auto`` means CUDA when the cluster has GPUs."""
    if device == "cpu" or (device == "auto" and not cluster_gpus):
        return "cpu", 0
    if device == "auto" or re.fullmatch(r"cuda(:\d+)?", device):
        if not cluster_gpus:
            raise ConfigError(f"{device!r} requested but the Ray cluster has no GPU (`ray status` lists its "
                              "resources; use cpu or auto)", key="device")
        return "cuda", 1
    raise ConfigError(f"{device!r} is not auto, cpu, cuda or cuda:N", key="device")


def _reachable(address: str) -> None:
    """Fail at once when nothing answers at a ``host:port`` address: ray.init would retry for minutes."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # "auto", "local", a Ray client address: left to ray.init
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
                          "`ray start --head` there", key="address") from None


def _connect(ray: Any, address: str | None) -> None:
    """Join the cluster at ``address`` (else RAY_ADDRESS, the latest one started here, or a new local one)."""
    if address is not None:
        _reachable(address)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        ray.init(address=address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address or 'the default address'}: {exc}",
                          key="address") from None
    finally:
        # ray.init makes SIGTERM exit the driver at once; the sweep's own handler cancels the tasks first.
        if main:
            signal.signal(signal.SIGTERM, previous)


class RayBackend:
    """Cells as Ray tasks, at most ``jobs`` at a time (None: as many as the cluster's resources allow)."""

    def __init__(self, *, address: str | None, device: str, threads: int, jobs: int | None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(f"the ray backend needs Ray: {RAY_EXTRA}", key="backend") from None
        self.ray = ray
        self.owned = not ray.is_initialized()  # a program that joined a cluster itself keeps its connection
        if self.owned:
            _connect(ray, address)
        try:
            self.device, gpus = placement(device, ray.cluster_resources().get("GPU", 0))
        except ConfigError:
            self.close()
            raise
        self.threads, self.jobs = threads, jobs
        self.task = ray.remote(run_remote).options(num_cpus=threads, num_gpus=gpus)

    def run(self, todo: list[Cell], cells_dir: Path, done: Done) -> None:
        queue = list(reversed(todo))
        pending: dict[Any, Cell] = {}
        try:
            while queue or pending:
                while queue and (self.jobs is None or len(pending) < self.jobs):
                    cell = queue.pop()
                    pending[self.task.remote(cell.settings, cell.id, self.device, self.threads)] = cell
                ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    cell = pending.pop(ref)
                    summary, files = self.ray.get(ref)
                    store_cell(cells_dir, cell.id, files)
                    done(cell, summary)
        except BaseException:
            self._cancel(list(pending))
            raise

    def _cancel(self, refs: list[Any]) -> None:
        """Cancel queued and running tasks: interrupted first, so they clean up; killed if they do not end."""
        for ref in refs:
            self.ray.cancel(ref)
        _, left = self.ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S) if refs else ([], [])
        for ref in left:
            self.ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()  # a local instance started here stops; a cluster only loses this driver
