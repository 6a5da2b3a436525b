"""N nodes in one process: gradients per node or batched, the rule on node-stacked tensors, sparse gossip.

A round has two phases. First every node's loss and gradient, either node by node with a plain model
replica per worker thread ("loop", what a daemon computes) or for groups of nodes in one batched call
("vectorized"). Then the very same algorithm rule as the daemon, called on node-stacked ``(N, b)`` column
blocks: the rules are elementwise except for the gossip, and the gossip mixes each column over nodes
only, so column blocks are independent — they run in parallel and their temporaries stay small. The
gossip is :class:`peernet.core.mixing.SparseMixing`: O(E·P), and (``exact`` mixing) row by row the same
arithmetic as the daemon's :func:`peernet.core.mixing.mix_one`.

The mode is chosen per device and task (``auto``): batched on a GPU and for the quadratic task, node by
node for image models on a CPU, where N ordinary calls beat one batched call (docs/algorithms.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch

from peernet.core.algorithms import Algorithm, HyperParams, MomentumTracking
from peernet.core.churn import EdgeFlows
from peernet.core.clipping import clipped_mix_rows
from peernet.core.compressed_gossip import StackedCompressedGossip
from peernet.core.mixing import SparseMixing
from peernet.core.topology import Topology
from peernet.core.tracker_start import AverageStart
from peernet.errors import SimulationError
from peernet.sim.blocks import BlockStack
from peernet.sim.workers import WorkerPool
from peernet.tasks import Task

Mode = Literal["auto", "vectorized", "loop"]
MODES = ("auto", "vectorized", "loop")
#: Elements per node-stacked array in one rule block (4 MiB in float32): small enough to stay in cache.
BLOCK_ELEMENTS = 1 << 20
#: Nodes per batched gradient call on a CPU at most, so the batch and activations stay small.
GROUP_NODES = 64
MIXINGS = ("auto", "exact", "csr")
#: Up to this many nodes ``auto`` mixing is ``exact`` (bit-identical to the daemons: clusters of this size
#: are run beside the simulator to compare); above it ``csr``, which is faster from degree 5 on.
EXACT_MIXING_NODES = 32


def choose_mixing(mixing: str, nodes: int, device: torch.device) -> str:
    """``exact`` (the daemon's arithmetic) where a daemon cluster could be run beside it, else ``csr``."""
    if mixing not in MIXINGS:
        raise SimulationError(f"unknown mixing {mixing!r}; use one of {', '.join(MIXINGS)}")
    if mixing != "auto":
        return mixing
    return "exact" if device.type == "cpu" and nodes <= EXACT_MIXING_NODES else "csr"


def choose_mode(mode: str, task: Task, device: torch.device) -> str:
    """The mode ``auto`` stands for: vectorized on CUDA and for the quadratic task, loop for image models on CPU."""
    if mode not in MODES:
        raise SimulationError(f"unknown simulator mode {mode!r}; use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    if device.type != "cpu":
        return "vectorized"
    return "vectorized" if task.batched_on_cpu else "loop"


class Simulator:
    """Holds the node-stacked parameters ``X (N, P)``, optimizer state and gradients, on the task's device.

    ``threads`` worker threads (0: every available core) share the work on a CPU; torch runs one intra-op
    thread in each. ``mixing`` is ``exact`` (each row bit-identical to the daemon's ``mix_one``), ``csr`` (one
    sparse product, several times faster on high-degree graphs) or ``auto`` (exact up to 32 nodes on a CPU).
    ``track_flows`` keeps the per-edge tracker flows that :meth:`crash` rolls back (on by
    default for tracking rules; it costs one ``(N, P)`` running sum).

    ``clip`` maps gossiped tensor names to a ClippedGossip radius (peernet.core.clipping.clip_radii): those are
    mixed row by row as the daemon mixes them, bit for bit, whatever ``mixing`` says. A pull is clipped by its
    norm over the whole row, so the rule then runs on one column block (one thread); and the implicit flows of
    churn.py hold only for linear mixing, so a clipped tracking run keeps none (no :meth:`crash`).

    ``compression`` runs every gossip as compressed gossip with public copies (peernet.core.compressed_gossip),
    the daemon's steps on node-stacked tensors. Compressors such as top-k need a node's whole row, so the rule
    then runs on one column block too. The tracker flows stay linear — in the public copies, ``γ W_ij (d̂_j − d̂_i)``
    — so :meth:`crash` rolls them back as with plain mixing.

    ``start`` (tracking rules) starts the tracker from the average of the first momentum
    (peernet.core.tracker_start): the start's rounds take one gradient, at round 0, and call the rule's
    ``start_step``. The exact start (K = 0) is not a sum of edge flows, so it keeps none (no :meth:`crash`).
    """

    def __init__(self, task: Task, topology: Topology, algorithm: Algorithm, hp: HyperParams,
                 mode: Mode | str = "auto", *, threads: int = 0, track_flows: bool | None = None,
                 mixing: str = "auto", clip: Mapping[str, float] | None = None,
                 compression: StackedCompressedGossip | None = None, start: AverageStart | None = None) -> None:
        if topology.n != task.nodes:
            raise SimulationError(f"topology has {topology.n} nodes but the task was built for {task.nodes}")
        self.task, self.topology, self.algorithm, self.hp = task, topology, algorithm, hp
        self.device = task.device
        self.mode = choose_mode(mode, task, self.device)
        self.mixing_kernel = choose_mixing(mixing, topology.n, self.device)
        self.pool = WorkerPool(threads if self.device.type == "cpu" else 1)
        self.round = 0
        self.clip = dict(clip or {})
        self.compression = compression
        self.start = start
        if start is not None and not algorithm.tracks:
            raise SimulationError(f"the average tracker start applies to tracking rules, not {algorithm.name}")
        if compression is not None and self.clip:
            raise SimulationError("clip_tau and compression cannot be combined: ClippedGossip clips pulls of the "
                                  "values, compressed gossip mixes public copies")
        n, p = topology.n, task.dim
        x0 = task.initial_params().to(self.device)
        # A GPU takes all columns at once, and so do clipping (its norms span the row) and compression (top-k and
        # low rank look at the whole row); a CPU otherwise about 4 MiB per array per block, one block per thread
        # at least.
        whole_rows = self.device.type != "cpu" or self.clip or compression is not None
        width = p if whole_rows else min(max(64, BLOCK_ELEMENTS // n), max(64, -(-p // self.pool.threads)))

        def stack() -> BlockStack:
            return BlockStack(n, p, width, x0.dtype, self.device)

        self._X = stack()
        self._X.fill_rows(x0)
        self._state = {name: stack() for name in algorithm.state_names}
        self.grads = stack()
        self.losses = torch.empty(n, dtype=x0.dtype, device=self.device)
        self.mixing = SparseMixing.of(topology)
        self.alive = [True] * n
        self.edges = [(topology.index_of(a), topology.index_of(b)) for a, b in topology.edges]
        track = algorithm.tracks if track_flows is None else track_flows and algorithm.tracks
        if track and self.clip:
            if track_flows:
                raise SimulationError("tracker flows (crash with rollback) are kept only for plain mixing, "
                                      "not with clip_tau: clipped flows are not linear in the trackers")
            track = False
        if track and start is not None and start.exact:
            if track_flows:
                raise SimulationError("tracker flows (crash with rollback) need a gossip start: the exact average "
                                      "start (tracker_init_rounds = 0) is not a sum of edge flows")
            track = False
        self.flows = EdgeFlows(self.mixing, stack()) if track else None
        self._groups = self._plan_groups()

    @property
    def X(self) -> torch.Tensor:
        """Node-stacked parameters ``(N, P)`` (a copy: the simulator keeps them in column blocks)."""
        return self._X.full()

    @property
    def state(self) -> dict[str, torch.Tensor]:
        """Node-stacked optimizer state by name, ``(N, P)`` copies."""
        return {name: s.full() for name, s in self._state.items()}

    def _plan_groups(self) -> list[range]:
        n = self.topology.n
        if self.mode == "loop":
            size = 1  # one node per item: the dynamic share-out balances best, and a node costs milliseconds
        elif self.device.type != "cpu":
            size = n
        else:
            size = max(1, min(GROUP_NODES, math.ceil(n / self.pool.threads)))
        return [range(lo, min(n, lo + size)) for lo in range(0, n, size)]

    def crash(self, index: int, *, rollback: bool = True) -> None:
        """Node ``index`` leaves for good: its edges drop, the others re-weight (MH over live degrees).

        With ``rollback`` (the churn-safe rule) both ends of every dropped edge take back that edge's
        tracker flow; without it the survivors keep the departed node's share in their trackers.
        """
        if self.algorithm.tracks and self.flows is None:
            raise SimulationError("crash() needs the tracker flows: build the Simulator with track_flows=True")
        self.alive[index] = False
        if self.flows is not None and rollback:
            tracker = self._state[self.algorithm.tracker]
            for edge in self.flows.edges_of(index):
                self.flows.rollback(tracker, edge)
        self.mixing = SparseMixing.metropolis(self.topology.n, self.edges, self.alive)
        if self.flows is not None:
            self.flows.reweight(self.mixing)

    def step(self) -> torch.Tensor:
        """Run one round on every node; return each node's mini-batch loss ``(N,)``."""
        r = self.round
        batched = self.mode == "vectorized"
        # The average start takes one gradient, its first momentum, at round 0 (no node rejoins in a simulation).
        fresh = self.start is None or self.start.takes_gradient(r, has_momentum=r > 0)
        if fresh:
            self.pool.run(lambda nodes: self.task.loss_grad_into(nodes, self._X, r, self.grads, self.losses,
                                                                 batched=batched), self._groups)
        self.pool.run(lambda k: self._rule_block(k, fresh), range(self._X.blocks))
        self.round += 1
        return self.losses.clone()

    def _rule_block(self, k: int, fresh: bool = True) -> None:
        """The rule on column block ``k`` of every node (``fresh``: with this round's gradients); the new parameters
        are written back in place."""
        x = self._X.block(k)
        state = {name: s.block(k) for name, s in self._state.items()}
        flows, flow_name, clip, rows = self.flows, self.algorithm.flow, self.clip, self.mixing.rows
        mix = self.mixing.mix if self.mixing_kernel == "exact" else self.mixing.mix_csr
        compression, round_ = self.compression, self.round

        def gossip(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
            if compression is not None:
                mixed, copies = compression.exchange(tensors, round_, mix)
                if flows is not None and flow_name in copies:  # edge (i, j) moved γ·W_ij (d̂_j − d̂_i) this round
                    flows.record(copies[flow_name] * compression.gamma, k)
                return mixed
            if flows is not None and flow_name in tensors:
                flows.record(tensors[flow_name], k)
            return {name: mix(v) if name not in clip else clipped_mix_rows(rows, v, clip[name])
                    for name, v in tensors.items()}

        phase = "train" if self.start is None else self.start.phase(round_)
        if phase == "train" or self.start is None:
            x_new = self.algorithm.step(x, state, self.grads.block(k), self.hp, gossip)
        else:
            assert isinstance(self.algorithm, MomentumTracking)  # checked at construction: a tracking rule
            x_new = self.algorithm.start_step(x, state, self.grads.block(k) if fresh else None, self.hp, gossip,
                                              descend=phase == "first", exact=self.start.exact)
        x.copy_(x_new)

    def node_state(self, name: str) -> torch.Tensor:
        """Node-stacked optimizer state ``(N, P)`` by name (e.g. ``"u"``, ``"c"``)."""
        return self._state[name].full()

    def evaluate(self, X: torch.Tensor | None = None, *, final: bool = False) -> dict[str, object]:
        """The task's evaluation of the current parameters (``X``: a copy the caller already holds), spread
        over the worker threads; ``final``: on every test sample (the run's last evaluation)."""
        return self.task.evaluate(self.X if X is None else X, self.pool.run, batched=self.mode == "vectorized",
                                  final=final)

    def close(self) -> None:
        self.pool.close()
