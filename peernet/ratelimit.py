"""A logger wrapper that emits each kind of warning at most once per interval, with a count of the rest."""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimitedLog:
    """A hostile or broken peer can make us drop thousands of messages a second; the log must not say so each time."""

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self.logger = logger
        self.every = every
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        if suppressed:
            msg += f" (+{suppressed} similar in the last {self.every:g}s)"
        self.logger.warning(msg, *args)
