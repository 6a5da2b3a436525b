"""Step-size schedules: the step size of round t of T, the same pure function in simulator and daemon."""

from __future__ import annotations

import math

from peernet.errors import ConfigError

SCHEDULES = ("constant", "cosine", "step")


def step_size_at(base: float, round_: int, total: int, *, schedule: str = "constant", warmup: int = 0,
                 decay: float = 0.1) -> float:
    """η_t for round ``round_`` (0-based) of ``total``.

    ``constant``: η. ``cosine``: η·(1 + cos(π·t/T))/2, from η down towards 0 (t < T, so never 0). ``step``:
    η, then η·decay from half the rounds on and η·decay² from three quarters on (the usual image-classifier
    recipe). ``warmup`` > 0 first ramps linearly, η·(t+1)/warmup over the first ``warmup`` rounds, then the
    schedule runs over the remaining rounds. Always > 0 for base > 0.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"{schedule!r} is not one of {', '.join(SCHEDULES)}", key="schedule")
    if round_ < warmup:
        return base * ((round_ + 1) / warmup)  # the ratio first: exactly base at the last warm-up round
    t, span = round_ - warmup, max(1, total - warmup)
    if schedule == "cosine":
        return base * (1.0 + math.cos(math.pi * min(t, span - 1) / span)) / 2.0
    if schedule == "step":
        return base * decay ** ((t >= span // 2) + (t >= (3 * span) // 4))
    return base
