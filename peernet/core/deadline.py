"""Adaptive per-round deadline for neighbours' messages: a multiple of recent round times, floored and capped."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from peernet.errors import ConfigError


@dataclass(frozen=True)
class DeadlinePolicy:
    """``deadline = clamp(factor × median(recent waits), floor, ceiling)`` seconds after our own send."""

    floor: float = 5.0
    ceiling: float = 30.0
    factor: float = 10.0
    window: int = 20

    def __post_init__(self) -> None:
        if not 0 < self.floor <= self.ceiling:
            raise ConfigError(f"needs 0 < deadline_floor <= deadline_ceiling, got {self.floor} and {self.ceiling}",
                              key="deadline_floor")
        if not self.factor >= 1:
            raise ConfigError(f"must be >= 1, got {self.factor}", key="deadline_factor")
        if self.window < 1:
            raise ConfigError(f"must be >= 1, got {self.window}", key="window")


class AdaptiveDeadline:
    """Tracks how long complete rounds took to gather and derives the next round's patience from it.

    Only rounds in which every awaited neighbour arrived are recorded, so a dead neighbour's timeouts do not
    inflate the deadline; the floor keeps ordinary hiccups (an evaluation, a checkpoint, a busy core) from
    excluding a healthy neighbour, and the ceiling bounds how long a round can ever wait.
    """

    def __init__(self, policy: DeadlinePolicy) -> None:
        self.policy = policy
        self._recent: deque[float] = deque(maxlen=policy.window)

    def record(self, seconds: float) -> None:
        self._recent.append(max(0.0, seconds))

    def current(self) -> float:
        p = self.policy
        if not self._recent:
            return p.ceiling  # nothing known yet (start, rejoin): be patient
        ordered = sorted(self._recent)
        median = ordered[len(ordered) // 2]
        return min(p.ceiling, max(p.floor, p.factor * median))
