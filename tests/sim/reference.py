"""Independent references for the simulator: the one-thread per-node loop and dense-W mixing with per-edge flows.

The per-node loop is the simulator's reference as it was before the engine became stacked and parallel:
every node runs the rule on its own ``(P,)`` tensors in a thread of its own, gradients are computed one
node after another in the calling thread (torch with one thread), and the gossip mixes what the
neighbours posted with :func:`peernet.core.mixing.mix_one`, as a daemon does. The dense reference mixes
with the full ``W`` and records every edge's tracker flow every round.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from peernet.core.algorithms import Algorithm, HyperParams
from peernet.core.mixing import mix_one
from peernet.core.topology import Topology, mh_weight
from peernet.tasks import Task


def one_thread_loop(task: Task, topology: Topology, algorithm: Algorithm, hp: HyperParams,
                    rounds: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Parameters ``(N, P)`` and losses ``(rounds, N)`` after ``rounds`` rounds of the per-node loop."""
    n = topology.n
    torch.set_num_threads(1)
    ids = topology.ids
    neigh = [[topology.index_of(j) for j in topology.neighbours(ids[i])] for i in range(n)]
    weights = [{topology.index_of(j): topology.weight(ids[i], j) for j in topology.neighbours(ids[i])}
               for i in range(n)]
    posted: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    barrier = threading.Barrier(n, timeout=120)

    def gossip_for(i: int):  # type: ignore[no-untyped-def]
        def gossip(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
            posted[i] = tensors
            barrier.wait()
            mixed = {k: mix_one(v, {j: posted[j][k] for j in neigh[i]}, weights[i]) for k, v in tensors.items()}
            barrier.wait()  # nobody posts next round's tensors while a neighbour still reads these
            return mixed
        return gossip

    X = task.initial_params().unsqueeze(0).repeat(n, 1)
    states = [algorithm.init_state(X[i]) for i in range(n)]
    all_losses = []
    with ThreadPoolExecutor(max_workers=n) as pool:
        for r in range(rounds):
            results = [task.node_loss_grad(i, X[i], r) for i in range(n)]
            all_losses.append(torch.tensor([loss for loss, _ in results], dtype=X.dtype))
            futures = [pool.submit(algorithm.step, X[i].clone(), states[i], g, hp, gossip_for(i))
                       for i, (_, g) in enumerate(results)]
            X = torch.stack([f.result() for f in futures])
    return X, torch.stack(all_losses)


class DenseReference:
    """Node-stacked rounds with ``W @ v`` and every edge's cumulative tracker flow recorded every round."""

    def __init__(self, task: Task, topology: Topology, algorithm: Algorithm, hp: HyperParams) -> None:
        self.task, self.algorithm, self.hp = task, algorithm, hp
        self.n = topology.n
        self.edges = [(topology.index_of(a), topology.index_of(b)) for a, b in topology.edges]
        self.alive = [True] * self.n
        self.W = topology.mixing_matrix(dtype=torch.float64)
        self.X = task.initial_params().unsqueeze(0).repeat(self.n, 1)
        self.state = algorithm.init_state(self.X)
        self.flows = torch.zeros(len(self.edges), self.X.shape[1], dtype=self.X.dtype)
        self.round = 0

    def _gossip(self, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.algorithm.tracks:
            d = tensors[self.algorithm.flow]
            for k, (i, j) in enumerate(self.edges):
                self.flows[k] += self.W[i, j] * (d[j] - d[i])
        return {k: self.W.to(v.dtype) @ v for k, v in tensors.items()}

    def step(self) -> None:
        grads = torch.empty_like(self.X)
        losses = torch.empty(self.n, dtype=self.X.dtype)
        self.task.loss_grad_into(range(self.n), self.X, self.round, grads, losses, batched=True)
        self.X = self.algorithm.step(self.X, self.state, grads, self.hp, self._gossip)
        self.round += 1

    def crash(self, index: int) -> None:
        self.alive[index] = False
        for k, (i, j) in enumerate(self.edges):
            if index in (i, j) and self.algorithm.tracks:
                c = self.state[self.algorithm.tracker]
                c[i] -= self.flows[k]
                c[j] += self.flows[k]
                self.flows[k].zero_()
        self.W = _dense_metropolis(self.n, self.edges, self.alive)


def _dense_metropolis(n: int, edges: list[tuple[int, int]], alive: list[bool]) -> torch.Tensor:
    """MH weights over live edges, built densely (independent of the engine's sparse rows)."""
    live = [(i, j) for i, j in edges if alive[i] and alive[j]]
    deg = torch.zeros(n, dtype=torch.long)
    for i, j in live:
        deg[i] += 1
        deg[j] += 1
    W = torch.zeros(n, n, dtype=torch.float64)
    for i, j in live:
        W[i, j] = W[j, i] = mh_weight(int(deg[i]), int(deg[j]))
    return W + torch.diag(1.0 - W.sum(dim=1))
