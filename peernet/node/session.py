"""Everything one run of a daemon holds between its phases (build, start, train, finish, close)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from peernet.bootstrap.client import BootstrapClient
from peernet.core.algorithms import Algorithm, HyperParams
from peernet.core.edges import NodeEdges
from peernet.core.tracker_start import AverageStart
from peernet.metrics.jsonl import MetricsWriter
from peernet.node.exchange import Exchange
from peernet.node.heartbeat import Heartbeat
from peernet.node.timing import RoundTiming
from peernet.tasks import ImageTask, QuadraticTask
from peernet.transport import Transport
from peernet.transport.faults import FaultyTransport


@dataclass
class Session:
    """The mutable state of one daemon run; the phases of NodeDaemon.run pass it along."""

    task: QuadraticTask | ImageTask
    algorithm: Algorithm
    hp: HyperParams
    rounds: int
    every: int
    edges: NodeEdges
    x: torch.Tensor
    state: dict[str, torch.Tensor]
    start_round: int
    crashed: bool
    resuming: bool
    transport: Transport
    faulty: FaultyTransport | None
    client: BootstrapClient
    incarnation: str
    previous: str | None
    exchange: Exchange
    metrics: MetricsWriter
    round: int = 0
    heartbeat: Heartbeat | None = None
    last_eval: dict[str, Any] = field(default_factory=dict)
    catchups: int = 0
    #: Where the parameters came from at the last rejoin or catch-up: "checkpoint" (a restart), "own" (a catch-up
    #: kept the model it held) or "average" (None: never rejoined).
    rejoin_source: str | None = None
    #: Where the neighbours' addresses came from: "bootstrap" (its start reply) or "cached" (state_dir/table.json).
    table_source: str = "bootstrap"
    #: The neighbours' endpoints as the trusted sources say (the start table, then the bootstrap's updates).
    endpoints: dict[int, str] = field(default_factory=dict)
    #: Where the rounds' time went (summary.json: round_ms_mean, overhead_ms, eval_s, checkpoint_s).
    timing: RoundTiming = field(default_factory=RoundTiming)
    #: The run's average tracker start (None: the zero start), and whether the node holds its first momentum.
    start: AverageStart | None = None
    has_momentum: bool = False
    #: The loss of the last gradient taken (the start's averaging rounds take none and report it again).
    loss: float = math.nan

    @property
    def tracker(self) -> torch.Tensor | None:
        """The rule's tracker (its own name for it), or None for rules without one."""
        name = self.algorithm.tracker
        return self.state.get(name) if name else None
