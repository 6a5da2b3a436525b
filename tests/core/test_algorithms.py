"""The six update rules: one hand-checked step each, the tracking invariant, and exactness on least squares."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from peernet.config import RunSettings
from peernet.core.algorithms import ALGORITHMS, Algorithm, HyperParams, get_algorithm
from peernet.core.topology import generate
from peernet.errors import AlgorithmError
from peernet.sim.engine import Simulator
from peernet.sim.run import run_simulation
from peernet.tasks import QuadraticTask

W3 = torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]], dtype=torch.float64)


def _gossip(**t: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: W3 @ v for k, v in t.items()}


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    g = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    return x, g


HP = HyperParams(lr=0.1, beta=0.9, weight_decay=0.01)


def _two_steps(name: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x, g = _inputs()
    alg = get_algorithm(name)
    state = alg.init_state(x)
    x1 = alg.step(x, state, g, HP, _gossip)
    x2 = alg.step(x1, state, g * 0.5, HP, _gossip)
    return x2, state


def test_dsgd_matches_formula() -> None:
    x, g = _inputs()
    x1 = W3 @ (x - 0.1 * (g + 0.01 * x))
    x2 = W3 @ (x1 - 0.1 * (0.5 * g + 0.01 * x1))
    got, _ = _two_steps("dsgd")
    torch.testing.assert_close(got, x2, rtol=0, atol=1e-14)


def test_dsgdm_matches_formula() -> None:
    x, g = _inputs()
    u = g + 0.01 * x
    x1 = W3 @ (x - 0.1 * u)
    u = 0.9 * u + 0.5 * g + 0.01 * x1
    x2 = W3 @ (x1 - 0.1 * u)
    got, state = _two_steps("dsgdm")
    torch.testing.assert_close(got, x2, rtol=0, atol=1e-14)
    torch.testing.assert_close(state["u"], u, rtol=0, atol=1e-14)


def test_qg_dsgdm_matches_formula() -> None:
    x, g = _inputs()
    m_hat = torch.zeros_like(x)
    for grad in (g, 0.5 * g):
        gd = grad + 0.01 * x
        m = 0.9 * m_hat + gd
        x_new = W3 @ (x - 0.1 * m)
        m_hat = 0.9 * m_hat + 0.1 * (x - x_new) / 0.1
        x = x_new
    got, state = _two_steps("qg-dsgdm")
    torch.testing.assert_close(got, x, rtol=0, atol=1e-13)
    torch.testing.assert_close(state["m"], m_hat, rtol=0, atol=1e-12)


def test_decentlam_matches_formula() -> None:
    x, g = _inputs()
    m = torch.zeros_like(x)
    for grad in (g, 0.5 * g):
        z = x - 0.1 * (grad + 0.01 * x)
        g_hat = (x - W3 @ z) / 0.1
        m = 0.9 * m + g_hat
        x = x - 0.1 * m
    got, _ = _two_steps("decentlam")
    torch.testing.assert_close(got, x, rtol=0, atol=1e-13)


@pytest.mark.parametrize("name,beta", [("momentum-tracking", 0.9), ("gradient-tracking", 0.0)])
def test_momentum_tracking_matches_formula(name: str, beta: float) -> None:
    x, g = _inputs()
    u = torch.zeros_like(x)
    c = torch.zeros_like(x)
    for grad in (g, 0.5 * g):
        u = beta * u + grad + 0.01 * x
        d = c - u
        x = W3 @ x - 0.1 * (u - c)
        c = W3 @ d + u
    got, state = _two_steps(name)
    torch.testing.assert_close(got, x, rtol=0, atol=1e-13)
    torch.testing.assert_close(state["c"], c, rtol=0, atol=1e-13)


def test_rules_work_on_single_node_vectors() -> None:
    """The daemon passes (P,) tensors; every rule must accept them unchanged."""
    for name in ALGORITHMS:
        alg = get_algorithm(name)
        x = torch.ones(5)
        state = alg.init_state(x)
        out = alg.step(x, state, torch.ones(5), HyperParams(lr=0.1), lambda **t: dict(t))
        assert out.shape == (5,)


def test_unknown_algorithm_and_bad_hyperparameters() -> None:
    with pytest.raises(AlgorithmError, match="unknown algorithm 'adam'"):
        get_algorithm("adam")
    with pytest.raises(AlgorithmError, match="step size"):
        HyperParams(lr=0.0)
    with pytest.raises(AlgorithmError, match="beta"):
        HyperParams(lr=0.1, beta=1.0)


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["ring", "complete", "star", "random", "exponential"]),
       n=st.integers(min_value=1, max_value=9), seed=st.integers(0, 1000),
       beta=st.floats(0.0, 0.99))
def test_tracking_invariant_property(kind: str, n: int, seed: int, beta: float) -> None:
    """mean_i(u_i − c_i) = mean_i(u_i) after every round, for any doubly stochastic W and gradients."""
    topo = generate(kind, n, seed=seed)
    W = topo.mixing_matrix(torch.float64)
    alg = get_algorithm("momentum-tracking")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    state = alg.init_state(x)
    for _ in range(5):
        g = torch.randn(n, 6, generator=gen, dtype=torch.float64) * 10
        x = alg.step(x, state, g, HyperParams(lr=0.05, beta=beta), lambda **t: {k: W @ v for k, v in t.items()})
        lhs = (state["u"] - state["c"]).mean(dim=0)
        torch.testing.assert_close(lhs, state["u"].mean(dim=0), rtol=0, atol=1e-11)


def _quadratic(algorithm: str, beta: float, heterogeneity: float, rounds: int = 3000) -> float:
    s = RunSettings(algorithm=algorithm, dataset="quadratic", topology="ring", nodes=8, beta=beta,
                    heterogeneity=heterogeneity, rounds=rounds, eval_every=rounds)
    return float(run_simulation(s, progress=False)["distance_to_optimum"])


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("algorithm", ["momentum-tracking", "gradient-tracking"])
def test_tracking_methods_reach_the_global_optimum(algorithm: str, beta: float) -> None:
    assert RunSettings(dataset="quadratic").step_size == 0.05  # the CLI default these figures are for
    assert _quadratic(algorithm, beta, heterogeneity=3.0) <= 1e-8


@pytest.mark.parametrize("algorithm", ["dsgd", "dsgdm"])
def test_non_tracking_methods_are_biased_and_bias_grows_with_heterogeneity(algorithm: str) -> None:
    mild = _quadratic(algorithm, 0.9, heterogeneity=1.0)
    strong = _quadratic(algorithm, 0.9, heterogeneity=3.0)
    assert mild >= 1e-3
    assert strong >= 1e-3
    assert strong > 2 * mild


def test_tracking_invariant_every_round_in_the_simulator() -> None:
    s = RunSettings(algorithm="momentum-tracking", dataset="quadratic", heterogeneity=3.0, nodes=8)
    topo = generate("ring", 8)
    sim = Simulator(QuadraticTask(s, 8), topo, get_algorithm(s.algorithm), HyperParams(lr=s.step_size))
    for _ in range(300):
        sim.step()
        u, c = sim.node_state("u"), sim.node_state("c")
        torch.testing.assert_close((u - c).mean(dim=0), u.mean(dim=0), rtol=0, atol=1e-12)


class _Abandoned(Exception):
    pass


def _transaction_setup(name: str, seed: int) -> tuple[Algorithm, torch.Generator, torch.Tensor, dict[str, torch.Tensor],
                                                      HyperParams]:
    """A rule, a seeded generator, float64 parameters of 6 nodes × 5 and the rule's zero state."""
    algo = get_algorithm(name)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 5, dtype=torch.float64, generator=gen)
    return algo, gen, x, algo.init_state(x), HyperParams(lr=0.1, beta=0.9, weight_decay=1e-3)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_an_abandoned_round_leaves_parameters_and_state_untouched(name: str) -> None:
    # The daemon keeps no copy of a round's starting point: a gossip that raises (round abandoned, catch-up)
    # must find x and every state entry exactly as they were, or the node would resume from a half-done round.
    algo, gen, x, state, hp = _transaction_setup(name, 3)

    def average(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.mean(dim=0, keepdim=True).expand_as(v).clone() for k, v in tensors.items()}

    def fail(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        raise _Abandoned

    for _ in range(3):  # non-zero momentum and tracker first
        x = algo.step(x, state, torch.randn(6, 5, dtype=torch.float64, generator=gen), hp, average)
    before_x, before_state = x.clone(), {k: v.clone() for k, v in state.items()}
    with pytest.raises(_Abandoned):
        algo.step(x, state, torch.randn(6, 5, dtype=torch.float64, generator=gen), hp, fail)
    assert torch.equal(x, before_x)
    assert all(torch.equal(state[k], before_state[k]) for k in state)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_a_rule_never_modifies_what_it_handed_to_its_gossip(name: str) -> None:
    # The daemon sends the gossiped tensors without copying them and keeps them for resends: a rule that wrote
    # into one afterwards would change what a neighbour receives, or corrupt a message still being sent.
    algo, gen, x, state, hp = _transaction_setup(name, 4)
    handed: list[tuple[torch.Tensor, torch.Tensor]] = []

    def watching(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        handed.extend((v, v.clone()) for v in tensors.values())
        return {k: v.mean(dim=0, keepdim=True).expand_as(v).clone() for k, v in tensors.items()}

    for _ in range(4):
        x_before = x.clone()
        x_new = algo.step(x, state, torch.randn(6, 5, dtype=torch.float64, generator=gen), hp, watching)
        assert torch.equal(x, x_before)  # x itself is never written either: the step returns a new tensor
        x = x_new
    assert handed and all(torch.equal(ref, copy) for ref, copy in handed)
