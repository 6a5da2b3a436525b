"""A dependency-free progress line for long runs: redraws in place on a terminal, prints sparsely otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``Progress(total, "simulate")``; call ``update(done, **fields)``; ``close()`` at the end."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, enabled: bool = True,
                 min_interval: float = 0.2) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        # Off a terminal (logs, CI) a line every 10% is enough and keeps logs readable.
        self.min_interval = min_interval if self.tty else 0.0
        self.start = time.monotonic()
        self._last = 0.0
        self._last_decile = -1

    def update(self, done: int, **fields: float | str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        decile = done * 10 // self.total
        if self.tty and now - self._last < self.min_interval and done < self.total:
            return
        if not self.tty and decile == self._last_decile and done < self.total:
            return
        self._last, self._last_decile = now, decile
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        width = 24
        filled = int(width * done / self.total)
        bar = "#" * filled + "-" * (width - filled)
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        eta_s = f"{eta:5.0f}s" if eta != float("inf") else "    ?"
        line = f"{self.label} [{bar}] {done}/{self.total} {rate:6.1f}/s eta {eta_s} {extra}"
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
