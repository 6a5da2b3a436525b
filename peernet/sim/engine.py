"""N nodes in one process: node-stacked vectorised rounds, and a per-node loop used as the reference.

Both modes call the very same algorithm rule as the daemon. The vectorised mode gives it ``(N, P)``
tensors and a gossip that is one matmul with W. The loop mode runs one thread per node, each calling
the rule on its own ``(P,)`` tensors with a gossip that exchanges through shared memory and mixes with
:func:`peernet.core.mixing.mix_one`, exactly as a daemon mixes what it received.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import torch

from peernet.core.algorithms import Algorithm, HyperParams
from peernet.core.churn import EdgeFlows, mh_matrix
from peernet.core.mixing import mix_one
from peernet.core.topology import Topology
from peernet.errors import SimulationError
from peernet.sim.tasks import Task

Mode = Literal["vectorized", "loop"]


class _LoopExchange:
    """Shared-memory gossip for the per-node loop: every node posts, all wait, each mixes its own row."""

    def __init__(self, topology: Topology) -> None:
        n = topology.n
        self.topology = topology
        self.posted: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
        # A timeout turns a failed node thread into an error instead of a hang of all the others.
        self.barrier = threading.Barrier(n, timeout=120)
        ids = topology.ids
        self.neigh = [[topology.index_of(j) for j in topology.neighbours(ids[i])] for i in range(n)]
        self.weights = [{topology.index_of(j): topology.weight(ids[i], j) for j in topology.neighbours(ids[i])}
                        for i in range(n)]

    def gossip_for(self, i: int):  # type: ignore[no-untyped-def]
        def gossip(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
            self.posted[i] = tensors
            self.barrier.wait()
            mixed = {k: mix_one(v, {j: self.posted[j][k] for j in self.neigh[i]}, self.weights[i])
                     for k, v in tensors.items()}
            # Second barrier: nobody may post next round's tensors while a neighbour still reads these.
            self.barrier.wait()
            return mixed

        return gossip


class Simulator:
    """Holds the node-stacked parameters ``X (N, P)`` and per-node optimizer state."""

    def __init__(self, task: Task, topology: Topology, algorithm: Algorithm, hp: HyperParams,
                 mode: Mode = "vectorized") -> None:
        if topology.n != task.nodes:
            raise SimulationError(f"topology has {topology.n} nodes but the task was built for {task.nodes}")
        if mode not in ("vectorized", "loop"):
            raise SimulationError(f"unknown simulator mode {mode!r}; use 'vectorized' or 'loop'")
        self.task = task
        self.topology = topology
        self.algorithm = algorithm
        self.hp = hp
        self.mode = mode
        self.round = 0
        x0 = task.initial_params()
        self.X = x0.unsqueeze(0).repeat(topology.n, 1)
        self.W = topology.mixing_matrix(dtype=self.X.dtype)
        self.alive = [True] * topology.n
        self.edges = [(topology.index_of(a), topology.index_of(b)) for a, b in topology.edges]
        self.flows: EdgeFlows | None = None
        if mode == "vectorized":
            self.state = algorithm.init_state(self.X)
            if algorithm.tracks:
                # Per-edge tracker flows (DESIGN.md §3), so a departed node's share can be rolled back.
                self.flows = EdgeFlows(self.edges, task.dim, self.X.dtype)
        else:
            self.node_states = [algorithm.init_state(self.X[i]) for i in range(topology.n)]
            self.exchange = _LoopExchange(topology)
            self.pool = ThreadPoolExecutor(max_workers=topology.n, thread_name_prefix="simnode")

    def _gossip(self, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.flows is not None and "d" in tensors:
            self.flows.record(tensors["d"], self.W)
        return {k: self.W @ v for k, v in tensors.items()}

    def crash(self, index: int, *, rollback: bool = True) -> None:
        """Node ``index`` leaves for good: its edges drop, the others re-weight (MH over live degrees).

        With ``rollback`` (the churn-safe rule) both ends of every dropped edge take back that edge's
        tracker flow; without it the survivors keep the departed node's share in their trackers.
        """
        if self.mode != "vectorized":
            raise SimulationError("crash() is supported by the vectorized simulator")
        self.alive[index] = False
        self.W = mh_matrix(self.topology.n, self.edges, self.alive, dtype=self.X.dtype)
        if self.flows is not None:
            for edge in self.flows.edges_of(index):
                if rollback:
                    self.flows.rollback(self.state["c"], edge)

    def step(self) -> torch.Tensor:
        """Run one round on every node; return each node's mini-batch loss ``(N,)``."""
        r = self.round
        if self.mode == "vectorized":
            losses, grads = self.task.batched_loss_grad(self.X, r)
            self.X = self.algorithm.step(self.X, self.state, grads, self.hp, self._gossip)
        else:
            results = [self.task.node_loss_grad(i, self.X[i], r) for i in range(self.topology.n)]
            losses = torch.tensor([loss for loss, _ in results])
            futures = [self.pool.submit(self.algorithm.step, self.X[i].clone(), self.node_states[i], g,
                                        self.hp, self.exchange.gossip_for(i))
                       for i, (_, g) in enumerate(results)]
            self.X = torch.stack([f.result() for f in futures])
        self.round += 1
        return losses

    def node_state(self, name: str) -> torch.Tensor:
        """Node-stacked optimizer state ``(N, P)`` by name (e.g. ``"u"``, ``"c"``)."""
        if self.mode == "vectorized":
            return self.state[name]
        return torch.stack([s[name] for s in self.node_states])

    def close(self) -> None:
        if self.mode == "loop":
            self.pool.shutdown(wait=True)
