"""A logger wrapper that emits each kind of warning at most once per interval, with a count of the rest."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any


class RateLimitedLog:
    """A hostile or broken peer can make us drop thousands of messages a second; the log must not say so each time.

    Each record carries the kind (``ratelimit_key``) and how many of that kind were held back before it
    (``suppressed``) as attributes, for handlers and tests that must not parse the wording.
    """

    def __init__(self, logger: logging.Logger, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every = every
        self.clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        if suppressed:
            msg += f" (+{suppressed} similar in the last {self.every:g}s)"
        self.logger.warning(msg, *args, extra={"ratelimit_key": key, "suppressed": suppressed})

    def flush(self, now: float | None = None, *, force: bool = False) -> int:
        """Log one "suppressed N" line per kind whose interval has passed since its last warning (with ``force``:
        every kind, as at close), so a burst that stopped is still reported; returns the number of lines logged.

        Cheap when nothing was held back, so a loop may call it on every turn.
        """
        if not self._suppressed:
            return 0
        now = self.clock() if now is None else now
        due = [key for key in self._suppressed if force or now - self._last[key] >= self.every]
        for key in due:
            count = self._suppressed.pop(key)
            self.logger.warning("%s: %d similar warnings suppressed since the last one, %.3gs ago", key, count,
                                now - self._last[key], extra={"ratelimit_key": key, "suppressed": count})
        return len(due)
