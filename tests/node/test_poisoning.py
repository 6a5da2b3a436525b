"""A compromised member that sends finite poison every round: blame stays on it, and clipping bounds the harm.

In-process daemons over the memory transport. The member (node 0) runs the daemon's own code, but the
network hands every round message it sends to its neighbours with ``x`` replaced by 1e5 in every coordinate:
well-formed, authenticated as node 0, within ``max_abs`` (so accepted), and wrong.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import msgpack
import pytest
import torch

from peernet.bootstrap.client import BootstrapClient
from peernet.config import RunSettings
from peernet.core.rounds import RoundPolicy
from peernet.errors import StateOutOfBounds
from peernet.node.exchange import Exchange
from peernet.node.inproc import InProcessCluster
from peernet.sim.run import run_simulation
from peernet.tasks import QuadraticTask
from peernet.transport import MemoryHub, MemoryTransport
from peernet.wire.messages import TensorSpec
from tests.clusters import params

pytestmark = pytest.mark.timeout(120)

MEMBER = 0
POISON = 1e5
BOUND = 1.5e5  # max_abs: the poison passes it, and an honest node pushed to 1.5 × the poison leaves it
QUAD = RunSettings(algorithm="momentum-tracking", topology="ring", nodes=4, dataset="quadratic", heterogeneity=3.0,
                   lr=0.05, rounds=150, seed=0)
HONEST = (1, 2, 3)


class _Poisoned:
    """Stands in for a receiving transport: round messages from MEMBER arrive with their ``x`` poisoned."""

    def __init__(self, target: MemoryTransport) -> None:
        self.target = target

    def _deliver(self, sender: int, frames: list[memoryview]) -> bool:
        if sender == MEMBER and len(frames) > 1:
            frames = _poison(frames)
        return self.target._deliver(sender, frames)


def _poison(frames: list[memoryview]) -> list[memoryview]:
    header: dict[str, Any] = msgpack.unpackb(bytes(frames[0]))
    if header.get("kind") != "round":
        return frames
    out = list(frames)
    for index, spec in enumerate(header["tensors"], start=1):  # one frame per tensor: the quadratic is small
        if spec["name"] == "x":
            out[index] = memoryview(torch.full((spec["nbytes"] // 8,), POISON, dtype=torch.float64).numpy().tobytes())
    return out


class PoisonedNetwork(MemoryHub):
    """The in-memory network, with MEMBER compromised (its sends go through ``_Poisoned``)."""

    def lookup(self, endpoint: str) -> MemoryTransport | None:
        target = super().lookup(endpoint)
        return None if target is None else cast(MemoryTransport, _Poisoned(target))


def _run(make_inproc: Callable[..., InProcessCluster], settings: RunSettings) -> InProcessCluster:
    cluster = make_inproc(settings, max_abs=BOUND, deadline_floor=0.5, deadline_ceiling=2.0)
    cluster.hub = PoisonedNetwork()
    cluster.start()
    for node in cluster.nodes.values():
        node.thread.join(90)
        assert not node.thread.is_alive(), f"node {node.daemon.cfg.id} did not end"
    return cluster


def _summaries(cluster: InProcessCluster, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    return {i: json.loads((cluster.state_dir(i) / "summary.json").read_text()) for i in ids}


def _no_honest_node_blamed(ends: dict[int, dict[str, Any]]) -> None:
    for i, end in ends.items():
        blamed = {int(j) for j in end["faulty_neighbours"]}
        assert blamed <= {MEMBER}, (i, end["faulty_neighbours"])
        assert "magnitude" not in end["dropped"] and "nonfinite" not in end["dropped"], (i, end["dropped"])


def test_without_clipping_the_pushed_nodes_stop_and_the_first_names_the_member(
        make_inproc: Callable[..., InProcessCluster]) -> None:
    cluster = _run(make_inproc, dataclasses.replace(QUAD, rounds=40))
    errors = {i: n.error for i, n in cluster.nodes.items() if n.error is not None}
    # The poison pushed the honest nodes past max_abs within a few rounds (the member's own state too, since it
    # mixes what they send it). Each stopped before sending such values ...
    assert set(HONEST) <= set(errors), errors
    assert all(isinstance(e, StateOutOfBounds) for e in errors.values()), errors
    ends = _summaries(cluster, HONEST)
    assert all(e["stopped"] == "out_of_bounds" and e["self_over_bound"] == 1 for e in ends.values())
    # The last heartbeat carried it to the bootstrap as well (`peernet status --json`).
    with BootstrapClient(cluster.bootstrap_address, timeout=5.0, retries=1) as client:
        last = {n["id"]: n["metrics"] for n in client.status()["nodes"]}
    assert all(last[i].get("self_over_bound") == 1 for i in HONEST), last
    # ... so no honest node was ever sent an out-of-bound value by another, and none blamed another.
    _no_honest_node_blamed(ends)
    # The first to go over is a neighbour of the member, and it names the member: its values led ours the most.
    # (A node further away names the neighbour the values came through: a relay, and only a pointer to follow.)
    first = min(ends, key=lambda i: ends[i]["final_round"])
    assert first in (1, 3) and ends[first]["suspects"] == [MEMBER], ends[first]
    assert cast(StateOutOfBounds, errors[first]).suspects == (MEMBER,)
    assert ends[first]["neighbour_lead"][str(MEMBER)] > 0.5 * POISON


def test_with_clipping_the_honest_nodes_stay_near_the_clean_run(
        make_inproc: Callable[..., InProcessCluster], tmp_path: Path) -> None:
    tau = 1.0
    settings = dataclasses.replace(QUAD, clip_tau=tau)
    cluster = _run(make_inproc, settings)
    assert all(n.error is None for n in cluster.nodes.values())
    ends = _summaries(cluster, (MEMBER, *HONEST))
    assert all(e["finished"] and e["self_over_bound"] == 0 for e in ends.values())
    _no_honest_node_blamed({i: ends[i] for i in HONEST})
    run_simulation(settings, tmp_path / "clean", progress=False)  # the same run, node 0 honest
    clean = torch.load(tmp_path / "clean" / "final_params.pt", weights_only=True)["params"]
    honest = list(HONEST)
    deviation = float(torch.linalg.vector_norm(params(cluster)[honest] - clean[honest], dim=1).max())
    # The member pulls each neighbour by at most w·τ per round (tests/core/test_clipping.py). A steady pull that
    # nothing cancels shifts the honest fixed point by at most about (Σ_member's edges w·τ) / (η · n_honest · μ),
    # μ the smallest curvature of the honest nodes' problem: 9.0 here, the bound asserted. The member's own
    # tracker is honest and cancels part of it: measured 1.2 at round 150, 0.72 once settled. Without clipping the
    # same poison takes honest nodes past 1.5e5 within ten rounds (the test above).
    problem = QuadraticTask(settings, settings.nodes).problem
    A = problem.A[honest]
    hessian = torch.einsum("nmd,nme->de", A, A) / problem.rows / len(honest)
    mu = float(torch.linalg.eigvalsh(hessian + settings.weight_decay * torch.eye(problem.dim, dtype=A.dtype))[0])
    bound = 2 * (1 / 3) * tau / (settings.step_size * len(honest) * mu)
    assert 0.1 < deviation <= bound, (deviation, bound)  # above 0.1: the poison was mixed in (clipped), not dropped


def test_a_node_out_of_bounds_sends_nothing_and_names_the_neighbour_that_led() -> None:
    hub = MemoryHub()
    t1, t2 = MemoryTransport(1, hub), MemoryTransport(2, hub)
    t1.connect(2, t2.endpoint)
    t2.connect(1, t1.endpoint)
    layout, policy = {"x": TensorSpec("x", "float64", (4,))}, RoundPolicy(floor=0.5, ceiling=1.0)
    one = Exchange(t1, 1, "0" * 16, {2: 0.5}, layout, policy=policy, max_abs=10.0)
    two = Exchange(t2, 2, "0" * 16, {1: 0.5}, layout, policy=policy, max_abs=10.0)
    other = threading.Thread(target=lambda: two.gossip_for(0)(x=torch.full((4,), 9.0, dtype=torch.float64)))
    other.start()
    mixed = one.gossip_for(0)(x=torch.ones(4, dtype=torch.float64))["x"]  # within the bound: both mix
    other.join(10)
    assert torch.equal(mixed, torch.full((4,), 5.0, dtype=torch.float64))
    assert one.lead == {2: 8.0} and two.lead == {1: -8.0}
    sent = t1.stats["msgs_out"]
    with pytest.raises(StateOutOfBounds, match="neighbour") as caught:
        one.gossip_for(1)(x=torch.full((4,), 12.0, dtype=torch.float64))
    assert caught.value.suspects == (2,) and one.self_over_bound == 1
    assert t1.stats["msgs_out"] == sent and 1 not in one.sent  # nothing of round 1 went out
    assert two.faulty == {} and one.faulty == {}
    t1.close()
    t2.close()
