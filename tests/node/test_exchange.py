"""The round exchange over the in-memory transport: excluded neighbours are heard again; a frozen node jumps."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from peernet.core.rounds import RoundPolicy
from peernet.node.exchange import CatchUp, Exchange
from peernet.transport import MemoryHub, MemoryTransport
from peernet.wire.codec import TensorSpec

pytestmark = pytest.mark.timeout(60)

RUN = "0" * 16
LAYOUT = {"x": TensorSpec("x", "float64", (4,))}
ROUNDS = 30


def _pair(*, hwm: int, floor: float) -> tuple[MemoryTransport, MemoryTransport, Exchange, Exchange]:
    """Nodes 1 and 2, each the other's only neighbour, over the in-memory transport (deadline ceiling 1 s)."""
    hub = MemoryHub()
    t1, t2 = MemoryTransport(1, hub, hwm=hwm), MemoryTransport(2, hub, hwm=hwm)
    t1.connect(2, t2.endpoint)
    t2.connect(1, t1.endpoint)
    policy = RoundPolicy(floor=floor, ceiling=1.0)
    one = Exchange(t1, 1, RUN, {2: 0.5}, LAYOUT, policy=policy)
    two = Exchange(t2, 2, RUN, {1: 0.5}, LAYOUT, policy=policy)
    return t1, t2, one, two


def test_a_node_that_excluded_every_neighbour_hears_them_again_and_readmits_them() -> None:
    """Node 1 excluded its only neighbour in an earlier round (both late at once on a loaded host).

    It then awaits nobody; it must still read its socket, or it never hears node 2 again, never re-admits
    it, and trains alone for the rest of the run (seen on CI: every node of a ring deaf and thousands of
    rounds apart).
    """
    t1, t2, one, two = _pair(hwm=8, floor=0.5)
    one.edges.drop(2)
    assert not one.edges.live[2] and one.edges.epoch[2] == 1
    used = {1: 0, 2: 0}
    errors: list[BaseException] = []

    def run(ex: Exchange, value: float) -> None:
        try:
            for r in range(ROUNDS):
                ex.gossip_for(r)(x=torch.full((4,), value, dtype=torch.float64))
                used[ex.node_id] += sum(ex.last_round_used.values())
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    second = threading.Thread(target=run, args=(two, 2.0), daemon=True)
    second.start()
    # Node 2's round-0 message is on its way before node 1 starts, so node 1 can hear it in its first round.
    deadline = time.monotonic() + 10
    while 0 not in two.sent:
        assert time.monotonic() < deadline, "node 2 never sent round 0"
        time.sleep(0.01)
    first = threading.Thread(target=run, args=(one, 1.0), daemon=True)
    first.start()
    for thread in (first, second):
        thread.join(timeout=45)
        assert not thread.is_alive(), "a node is stuck in a round"
    t1.close()
    t2.close()
    assert not errors, errors
    # Round 0 is the one node 1 declared node 2 excluded; from round 1 on both mix over the new epoch.
    assert one.edges.live[2] and one.edges.epoch[2] == two.edges.epoch[1] == 1
    assert used == {1: ROUNDS - 1, 2: ROUNDS - 1}, used
    assert one.timeouts[2] == 0 and two.timeouts[1] == 0


def test_a_node_frozen_while_its_neighbour_went_on_sees_at_once_that_it_is_behind() -> None:
    """Node 1 freezes after round 0 (SIGSTOP) while node 2 excludes it and runs 20 more rounds.

    What node 2 sent meanwhile waits in node 1's socket, oldest first. Node 1's first round after the silence
    must read that backlog at once and jump (CatchUp to node 2's round), not replay it one stale round at a
    time, alone, while node 2 goes on (on CI that put the catch-up 19 rounds before the end of the run).
    """
    t1, t2, one, two = _pair(hwm=64, floor=0.3)
    ahead = 21
    errors: list[BaseException] = []

    def run_two() -> None:
        try:
            for r in range(ahead):
                two.gossip_for(r)(x=torch.full((4,), 2.0, dtype=torch.float64))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    second = threading.Thread(target=run_two, daemon=True)
    second.start()
    one.gossip_for(0)(x=torch.full((4,), 1.0, dtype=torch.float64))  # round 0 together ...
    second.join(timeout=30)  # ... then node 1 is frozen while node 2 excludes it and goes on
    assert not second.is_alive() and not errors, errors
    assert two.timeouts[1] == 1 and max(two.sent) == ahead - 1
    with pytest.raises(CatchUp) as jump:
        one.gossip_for(1)(x=torch.full((4,), 1.0, dtype=torch.float64))
    assert jump.value.round == ahead - 1
    t1.close()
    t2.close()
