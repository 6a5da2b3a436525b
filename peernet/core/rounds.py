"""The round policy: how long a round waits, when it gives up on a neighbour, when a node catches up or rejoins.

Pure decisions over numbers the exchange measures (seconds waited, rounds announced, silences); no clock
and no I/O here, so the simulator's protocol mode and the daemon take the same decisions from the same
inputs, and tests can drive every branch without a network.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from peernet.errors import ConfigError

#: How far ahead of us a neighbour must have announced itself to have *gone on without us*: one round ahead
#: is normal for a neighbour that includes us (its next message can overtake a delayed one), two is not.
WENT_ON = 2


@dataclass(frozen=True)
class RoundPolicy:
    """Every knob of the round protocol; the node config's ``deadline_*`` and round keys build one.

    ``deadline = clamp(factor × median(recent complete rounds' waits), floor, ceiling)`` seconds after our own
    send; the other fields are documented in docs/node.md ("Round policy").
    """

    floor: float = 5.0
    ceiling: float = 30.0
    factor: float = 10.0
    window: int = 20
    rounds_ahead: int = 2
    ping_every: float = 0.5
    drain_limit: int = 4
    stall_drain_limit: int = 64
    stall_wait: float = 0.05
    goodbye_grace: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.floor <= self.ceiling < math.inf:
            raise ConfigError(f"needs 0 < deadline_floor <= deadline_ceiling, got {self.floor} and {self.ceiling}",
                              key="deadline_floor")
        if not 1 <= self.factor < math.inf:
            raise ConfigError(f"must be >= 1, got {self.factor}", key="deadline_factor")
        for key, low in (("window", 1), ("rounds_ahead", WENT_ON), ("drain_limit", 1), ("stall_drain_limit", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"must be >= {low}, got {getattr(self, key)}", key=key)
        for key in ("ping_every", "stall_wait"):
            if not 0 < getattr(self, key) < math.inf:
                raise ConfigError(f"must be > 0 and finite, got {getattr(self, key)}", key=key)
        if self.goodbye_grace is not None and not 0 <= self.goodbye_grace < math.inf:
            raise ConfigError(f"must be >= 0 and finite, got {self.goodbye_grace}", key="goodbye_grace")

    @property
    def grace(self) -> float:
        """Seconds a finished node keeps serving its neighbours before it closes (default: the ceiling)."""
        return self.ceiling if self.goodbye_grace is None else self.goodbye_grace

    def accepts(self, current: int, round_: int) -> bool:
        """Whether a round message for ``round_`` is filed while we are at ``current`` (else: stale or too far)."""
        return current <= round_ <= current + self.rounds_ahead

    def went_on(self, announced: int, round_: int) -> bool:
        """A neighbour that announced ``announced`` finished round ``round_ + 1`` without us: it excluded us and
        is not waiting; its message for ``round_`` is here already or lost (a partition), never late."""
        return announced >= round_ + WENT_ON

    def give_up(self, *, elapsed: float, patience: float, silences: Iterable[float]) -> bool:
        """Stop waiting for the neighbours still missing?

        Never past the ceiling. Past the adaptive patience, give up only if every missing neighbour has been
        silent for at least the patience: one that pings is alive and itself waiting for someone, so excluding
        it would make every node along a chain time out on the next one.
        """
        if elapsed >= self.ceiling:
            return True
        return elapsed >= patience and all(s >= patience for s in silences)

    def catch_up_to(self, round_: int, known: Iterable[int]) -> int | None:
        """The round to jump to when *every* neighbour we know the round of is two or more ahead (we stalled),
        else None. Behind only some of them, we stay: jumping would push the gap onto the others."""
        rounds = list(known)
        if rounds and min(rounds) >= round_ + WENT_ON:
            return min(rounds)
        return None

    def stalled(self, silence: float) -> bool:
        """We did not read the socket for longer than the floor: a freeze or a long pause, not a slow round."""
        return silence > self.floor

    @staticmethod
    def rejoin_round(start: int, known: Iterable[int]) -> int:
        """Where a (re)joining node continues: at the slowest neighbour's round (it still holds and resent its
        messages of that round; those ahead wait for us), never before our own checkpoint."""
        return max(start, min(known, default=start))

    @staticmethod
    def rejoin_from_checkpoint(mode: str, lag: int, checkpoint_every: int) -> bool:
        """Whether a restarted node continues from its checkpoint (else from its neighbours' average), ``lag``
        rounds behind them. ``auto`` tolerates the lag a periodic checkpoint plus a prompt restart leave."""
        if mode == "auto":
            return lag <= max(10, 2 * checkpoint_every)
        return mode == "checkpoint"


class AdaptiveDeadline:
    """Tracks how long complete rounds took to gather and derives the next round's patience from it.

    Only rounds in which every awaited neighbour arrived are recorded, so a dead neighbour's timeouts do not
    inflate the deadline; the floor keeps ordinary hiccups (an evaluation, a checkpoint, a busy core) from
    excluding a healthy neighbour, and the ceiling bounds how long a round can ever wait.
    """

    def __init__(self, policy: RoundPolicy) -> None:
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
