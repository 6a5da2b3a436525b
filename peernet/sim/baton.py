"""Deterministic scheduling of daemon threads over virtual time: one thread runs at a time, in a fixed order.

The protocol simulator runs N real daemons as threads. Left to the OS, their interleaving (and so which
message a node sees first, and whether a deadline passes) would change from run to run. Here a thread runs
only while it holds the baton; it gives it up when it would wait (a receive with nothing to read), and the
baton goes to the next thread in node order that has something to read or whose wait is over. When every
thread waits, virtual time jumps to the earliest wake-up. Computation takes no virtual time, so a run is a
pure function of the seed, the settings and the scenario.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

from peernet.errors import SimulationError

#: Real seconds a thread may wait for the baton before the run is declared stuck (a bug, never a slow round).
STUCK_AFTER = 600.0


class Baton:
    """Hand the one right to run between participants ``ids`` in order; ``now()`` is the virtual clock."""

    def __init__(self, ids: Sequence[int]) -> None:
        self._cond = threading.Condition()
        self._now = 0.0
        self._order = list(ids)
        # Every participant starts out waiting with nothing to wait for: the first to take the baton is ids[0].
        self._waiting: dict[int, tuple[float, Callable[[], bool]]] = {i: (0.0, _always) for i in ids}
        self._done: set[int] = set()
        self._current: int | None = self._order[0] if self._order else None

    def now(self) -> float:
        """Virtual seconds since the start; advances only when every participant waits."""
        return self._now

    def enter(self, pid: int) -> None:
        """Block the calling thread (participant ``pid``) until it holds the baton."""
        with self._cond:
            self._await(pid)

    def wait(self, pid: int, seconds: float, ready: Callable[[], bool]) -> None:
        """Give the baton away until ``ready()`` holds or ``seconds`` of virtual time passed; then hold it again."""
        with self._cond:
            wake = self._now + max(seconds, 0.0)
            if seconds > 0 and wake <= self._now:
                # A wait shorter than half the clock's last bit (what is left of a deadline computed in another
                # order, e.g. 19.7 + 0.1 - 19.79999...) would not move the clock, and a participant that waits
                # "until the deadline" in a loop would spin at that instant for ever: move it by one ulp at least.
                wake = math.nextafter(self._now, math.inf)
            self._waiting[pid] = (wake, ready)
            self._pass_on(pid)
            self._await(pid)

    def leave(self, pid: int) -> None:
        """Participant ``pid`` is finished (or dead): never schedule it again."""
        with self._cond:
            self._done.add(pid)
            self._waiting.pop(pid, None)
            if self._current == pid or self._current is None:
                self._pass_on(pid)

    def _await(self, pid: int) -> None:
        if not self._cond.wait_for(lambda: self._current == pid, STUCK_AFTER):
            raise SimulationError(f"protocol simulation stuck: participant {pid} waited {STUCK_AFTER:g} s for its "
                                  f"turn (running: {self._current})")
        self._waiting.pop(pid, None)

    def _pass_on(self, after: int) -> None:
        """Give the baton to the next participant (in order, after ``after``) that can run; if none can, advance
        virtual time to the earliest wake-up first."""
        k = self._order.index(after) + 1 if after in self._order else 0
        rotated = self._order[k:] + self._order[:k]
        candidates = [p for p in rotated if p in self._waiting and p not in self._done]
        chosen = next((p for p in candidates if self._runnable(p)), None)
        if chosen is None and candidates:
            self._now = max(self._now, min(self._waiting[p][0] for p in candidates))
            chosen = next(p for p in candidates if self._runnable(p))
        self._current = chosen
        self._cond.notify_all()

    def _runnable(self, pid: int) -> bool:
        wake, ready = self._waiting[pid]
        return wake <= self._now or ready()


def _always() -> bool:
    return True
