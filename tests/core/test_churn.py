"""Churn-safe tracking: per-edge flows equal the trackers, and rolling them back removes a crash's bias."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from peernet.config import RunSettings
from peernet.core.algorithms import HyperParams, get_algorithm
from peernet.core.churn import mh_matrix
from peernet.core.topology import generate
from peernet.sim.engine import Simulator
from peernet.tasks import QuadraticTask
from tests.sim.reference import DenseReference


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["ring", "random", "complete", "exponential"]), n=st.integers(2, 10),
       seed=st.integers(0, 100), dead=st.sets(st.integers(0, 9), max_size=3))
def test_mh_matrix_stays_doubly_stochastic_with_dead_nodes(kind: str, n: int, seed: int, dead: set[int]) -> None:
    topo = generate(kind, n, seed=seed)
    alive = [i not in dead for i in range(n)]
    W = mh_matrix(n, topo.edges, alive)
    torch.testing.assert_close(W, W.T)
    torch.testing.assert_close(W.sum(dim=1), torch.ones(n, dtype=W.dtype))
    assert bool((W >= 0).all())
    for i in range(n):
        if not alive[i]:
            assert W[i, i] == 1.0  # a dead node is cut off
    if not dead:
        torch.testing.assert_close(W, topo.mixing_matrix(torch.float64))


def _crash_run(rollback: bool, crash_round: int = 1500, rounds: int = 6000) -> tuple[float, float, Simulator]:
    s = RunSettings(algorithm="momentum-tracking", dataset="quadratic", nodes=8, heterogeneity=1.0)
    task = QuadraticTask(s, 8)
    sim = Simulator(task, generate("ring", 8), get_algorithm(s.algorithm), HyperParams(lr=s.step_size))
    for r in range(rounds):
        if r == crash_round:
            sim.crash(3, rollback=rollback)
        sim.step()
    survivors = [i for i in range(8) if i != 3]
    optimum = task.problem.optimum_of(survivors, s.weight_decay)
    distance = task.problem.distance_to_optimum(sim.X, survivors, optimum)
    tracker_sum = float(torch.linalg.vector_norm(sim.state["c"][survivors].sum(dim=0)))
    return distance, tracker_sum, sim


def test_flows_equal_trackers_without_churn() -> None:
    s = RunSettings(algorithm="momentum-tracking", dataset="quadratic", nodes=8, heterogeneity=3.0)
    sim = Simulator(QuadraticTask(s, 8), generate("exponential", 8), get_algorithm(s.algorithm),
                    HyperParams(lr=s.step_size))
    for _ in range(200):
        sim.step()
        assert sim.flows is not None
        torch.testing.assert_close(sim.flows.node_sum(8), sim.state["c"], rtol=0, atol=1e-10)


def test_rollback_lets_survivors_reach_their_own_optimum() -> None:
    with_rb, sum_rb, _ = _crash_run(rollback=True)
    without, sum_no, _ = _crash_run(rollback=False)
    print(f"survivors' distance to their optimum: rollback {with_rb:.3g}, no rollback {without:.3g}; "
          f"tracker sum norm {sum_rb:.3g} vs {sum_no:.3g}")
    assert with_rb <= 1e-6
    assert sum_rb <= 1e-9
    assert without >= 1e-2  # the permanent bias the rollback removes
    assert sum_no >= 1e-2


@pytest.mark.parametrize(("kind", "n"), [("ring", 8), ("torus", 16), ("exponential", 16), ("random", 12)])
@pytest.mark.parametrize("algorithm", ["momentum-tracking", "gradient-tracking", "dsgdm"])
@pytest.mark.parametrize("mixing", ["exact", "csr"])
def test_sparse_simulator_equals_dense_mixing_with_per_edge_flows_through_a_crash(kind: str, n: int,
                                                                                algorithm: str, mixing: str) -> None:
    """The engine's sparse gossip and implicit flows against dense W and flows recorded every round."""
    s = RunSettings(algorithm=algorithm, dataset="quadratic", nodes=n, heterogeneity=2.0, seed=3)
    topo, hp = generate(kind, n, seed=3), HyperParams(lr=0.05)
    task = QuadraticTask(s, n)
    sim = Simulator(task, topo, get_algorithm(algorithm), hp, threads=2, mixing=mixing)
    ref = DenseReference(task, topo, get_algorithm(algorithm), hp)
    for r in range(240):
        if r in (80, 160):  # two departures: the second re-weights edges the first already changed
            sim.crash(3 if r == 80 else 5)
            ref.crash(3 if r == 80 else 5)
        sim.step()
        ref.step()
    sim.close()
    assert float((sim.X - ref.X).abs().max()) <= 1e-12
    for name in ref.state:
        assert float((sim.state[name] - ref.state[name]).abs().max()) <= 1e-12
    assert float((ref.X - task.initial_params()).abs().max()) > 1e-2
