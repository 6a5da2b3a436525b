"""Where a daemon's rounds go: compute, wait, mix, evaluation, checkpoints and the bookkeeping left over."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RoundTiming:
    """Per-round seconds of one daemon run, summarised for summary.json.

    A round's *overhead* is its time up to its evaluation minus its gradient (compute), its wait for the
    neighbours and its mixing: what the daemon itself costs each round (copying, encoding and sending the
    tensors, the metrics line, the heartbeat). It is measured twice: in wall seconds, and in this thread's
    CPU seconds, which on a machine with more busy processes than cores leaves out the time the others held
    the cores. Evaluation and checkpoints are totalled on their own: they come every few rounds, at a cost
    the user chooses (eval_every, eval_samples, checkpoint_every).
    """

    overhead: list[float] = field(default_factory=list)
    overhead_cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    eval_s: float = 0.0
    checkpoint_s: float = 0.0

    def add(self, *, wall: float, accounted: float, cpu: float, cpu_accounted: float) -> None:
        """One round up to its evaluation: wall and CPU seconds, and those of them in compute + wait + mix."""
        self.wall.append(wall)
        self.overhead.append(max(0.0, wall - accounted))
        self.overhead_cpu.append(max(0.0, cpu - cpu_accounted))

    def summary(self) -> dict[str, Any]:
        if not self.wall:
            return {}
        return {"round_ms_mean": 1000 * statistics.fmean(self.wall), "overhead_ms": _stats(self.overhead),
                "overhead_cpu_ms": _stats(self.overhead_cpu), "eval_s": self.eval_s, "checkpoint_s": self.checkpoint_s}


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = sorted(1000 * v for v in seconds)
    return {"median": statistics.median(ms), "mean": statistics.fmean(ms), "p90": ms[int(0.9 * (len(ms) - 1))],
            "max": ms[-1]}
