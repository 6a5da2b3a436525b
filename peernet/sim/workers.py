"""The simulator's threads: worker threads that each run torch with one intra-op thread, never more than the cores.

torch's own intra-op pool (OpenMP) spins its threads between operations; two such pools, or one beside
another busy process, fight for the cores and a round can get ten times slower. The simulator therefore
sets torch to one intra-op thread and parallelises itself, over nodes (gradients) and over column blocks
(the rule), with as many plain threads as it may use. torch releases the GIL inside its kernels, so the
threads really run at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from peernet.errors import ConfigError

T = TypeVar("T")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _one_torch_thread() -> None:
    import torch  # here, not at the top: available_cores() is also used where torch is not loaded yet

    torch.set_num_threads(1)


class WorkerPool:
    """``run(fn, items)`` = ``[fn(x) for x in items]``, computed by ``threads`` workers with one torch thread each."""

    def __init__(self, threads: int = 0) -> None:
        if threads < 0:
            raise ConfigError(f"must be >= 0 (0: every available core), got {threads}", key="threads")
        self.threads = threads or available_cores()
        _one_torch_thread()  # the calling thread also runs torch ops (the rule's first block, evaluation)
        self._pool = (ThreadPoolExecutor(self.threads - 1, thread_name_prefix="peernet-sim",
                                         initializer=_one_torch_thread) if self.threads > 1 else None)

    def run(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """Apply ``fn`` to every item. Workers and the caller take items one at a time from a shared counter,
        so a thread slowed by another process simply takes fewer: no static split waits for the slowest.
        """
        if self._pool is None or len(items) <= 1:
            return [fn(x) for x in items]
        results: list[Any] = [None] * len(items)
        order = iter(range(len(items)))
        lock = threading.Lock()
        failed = threading.Event()  # one failure stops the others taking new items

        def drain() -> None:
            while not failed.is_set():
                with lock:
                    i = next(order, None)
                if i is None:
                    return
                try:
                    results[i] = fn(items[i])
                except BaseException:
                    failed.set()
                    raise

        futures = [self._pool.submit(drain) for _ in range(min(self.threads - 1, len(items) - 1))]
        try:
            drain()
        finally:
            for f in futures:
                f.result()
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
