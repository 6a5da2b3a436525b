"""The average start of the tracking rules: which rounds average the first momentum before the first descent.

The authors of Momentum Tracking start the tracker at its steady state: one all-reduce of the first gradients,
so that the first direction is the network-average gradient and ``c_i = u_i − ū``. A gossip-only network has no
all-reduce. ``AverageStart(K)`` spends the run's first ``K`` rounds averaging instead: each node takes its first
momentum ``u`` once (its first gradient), keeps it, and runs the rule's tracker update with no descent, so that
``y = u − c`` goes ``u → W u → … → W^K u``. Round ``K`` descends along ``W^K u``, an estimate of ``ū`` that is off
by at most ``|λ₂|^K`` of the spread; training proper begins at round ``K + 1``. Every averaging round is an
ordinary gossip of the tracker, so the tracker stays the sum of its edge flows and its sum over the nodes is
exact (docs/algorithms.md, churn) whatever ``K`` is. ``K = 0`` is the exact network average, which only the
simulator, holding every node, can compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from peernet.errors import AlgorithmError

TRACKER_STARTS = ("zero", "average")
Phase = Literal["average", "first", "train"]


@dataclass(frozen=True)
class AverageStart:
    """``rounds`` (K) gossip averaging rounds before the first descent; 0: the exact average (simulator only)."""

    rounds: int

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise AlgorithmError(f"the average start needs 0 or more averaging rounds, got {self.rounds}")

    @property
    def exact(self) -> bool:
        """Whether the first momentum is averaged exactly over all nodes (K = 0) rather than by gossip."""
        return self.rounds == 0

    def phase(self, round_: int) -> Phase:
        """``average`` (no descent), ``first`` (the descent along the averaged first momentum) or ``train``."""
        if round_ < self.rounds:
            return "average"
        return "first" if round_ == self.rounds else "train"

    def takes_gradient(self, round_: int, has_momentum: bool) -> bool:
        """Whether round ``round_`` computes a gradient: every training round, and the start's rounds only until the
        node holds its first momentum (a node that rejoins during the start with a fresh state takes its own)."""
        return self.phase(round_) == "train" or not has_momentum


def average_start(kind: str, rounds: int) -> AverageStart | None:
    """The start a run's ``tracker_init`` and ``tracker_init_rounds`` ask for (None: the zero start)."""
    if kind not in TRACKER_STARTS:
        raise AlgorithmError(f"unknown tracker start {kind!r}; choose one of: {', '.join(TRACKER_STARTS)}")
    return AverageStart(rounds) if kind == "average" else None
