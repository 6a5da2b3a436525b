"""Round tensors received into reused per-neighbour buffers: never overwritten before they are mixed.

A scripted neighbour (node 2, raw frames from the codec) sends its round messages out of order, twice and
malformed, over the in-memory transport and over ZeroMQ (payload received in place with
``recv_into``). Node 1's exchange must mix exactly each round's values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import torch

from peernet.core.rounds import RoundPolicy
from peernet.node.exchange import Exchange
from peernet.transport import MemoryHub, MemoryTransport, Transport, ZmqTransport
from peernet.wire.codec import encode, specs_of
from peernet.wire.messages import CHUNK_BYTES, PROTOCOL_VERSION, Header, TensorSpec

pytestmark = pytest.mark.timeout(60)

RUN = "0" * 16
# Three chunk frames per tensor, the last one short: what the in-place receive has to get right.
N = (2 * CHUNK_BYTES + 4096) // 8
LAYOUT = {"x": TensorSpec("x", "float64", (N,))}
Pair = tuple[Transport, Transport]


@pytest.fixture(params=["memory", "zmq"])
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    """(node 1's transport, the scripted node 2's), connected both ways, queues deep enough for the script."""
    if request.param == "memory":
        hub = MemoryHub()
        one: Transport = MemoryTransport(1, hub, hwm=16)
        two: Transport = MemoryTransport(2, hub, hwm=16)
    else:
        one, two = ZmqTransport(1, sndhwm=16, rcvhwm=16), ZmqTransport(2, sndhwm=16, rcvhwm=16)
    one.connect(2, two.endpoint)
    two.connect(1, one.endpoint)
    try:
        yield one, two
    finally:
        one.close()
        two.close()


def _message(round_: int, value: float, sender: int = 2) -> list[bytes]:
    x = torch.full((N,), value, dtype=torch.float64)
    header = Header(version=PROTOCOL_VERSION, run=RUN, sender=sender, round=round_, kind="round", degree=1,
                    epoch=0, tensors=specs_of({"x": x}), meta={"live": True, "full": True})
    return [bytes(f) for f in encode(header, {"x": x})]


def _send_all(two: Transport, messages: list[list[bytes]]) -> None:
    """Queue each message in order; ZeroMQ refuses until the connection is up (IMMEDIATE), so retry a while."""
    for frames in messages:
        deadline = time.monotonic() + 10
        while not two.send(1, frames):
            assert time.monotonic() < deadline, "the scripted neighbour could not queue a message"
            time.sleep(0.002)


def _mixed(exchange: Exchange, round_: int) -> float:
    """Node 1 gossips zeros with weight 1/2 to node 2: the result is half of what it filed from node 2."""
    out = exchange.gossip_for(round_)(x=torch.zeros(N, dtype=torch.float64))["x"]
    assert torch.equal(out, torch.full_like(out, out[0].item())), "a round mixed parts of different messages"
    return float(out[0])


def _exchange(transport: Transport) -> Exchange:
    return Exchange(transport, 1, RUN, {2: 0.5}, LAYOUT, policy=RoundPolicy(floor=0.5, ceiling=5.0))


def _wait_until_received(exchange: Exchange, count: Callable[[], int], want: int) -> None:
    for _ in range(200):
        if count() >= want:
            return
        exchange.poll(exchange.current_round, timeout=0.05)
    raise AssertionError(f"only {count()} of {want} messages arrived")


def test_a_buffered_round_is_not_overwritten_by_later_messages_before_it_is_mixed(pair: Pair) -> None:
    one, two = pair
    ex = _exchange(one)
    # Round 1 arrives first and is filed; then a second round 1 with other values (a duplicate: it must not
    # touch the filed copy), and only then round 0, into the other buffer. Each must be mixed in its round.
    _send_all(two, [_message(1, 11.0), _message(1, 99.0), _message(0, 10.0)])
    assert _mixed(ex, 0) == 5.0
    _send_all(two, [_message(2, 12.0)])  # round 2 reuses round 0's buffer, which has been mixed by now
    assert _mixed(ex, 1) == 5.5
    assert _mixed(ex, 2) == 6.0
    assert ex.ignored["duplicate"] == 1 and sum(ex.dropped.values()) == 0


def test_the_tensors_filed_are_the_reused_buffers(pair: Pair) -> None:
    """No allocation per message: what is filed for a round is one of rounds_ahead + 1
    buffers per neighbour, reused."""
    one, two = pair
    ex = _exchange(one)
    seen: set[int] = set()
    for r in range(6):
        _send_all(two, [_message(r, float(r))])
        _wait_until_received(ex, lambda r=r: len(ex.inbox.get(r, {})), 1)  # type: ignore[misc]
        seen.add(ex.inbox[r][2][0]["x"].data_ptr())
        assert _mixed(ex, r) == r / 2
    assert len(seen) == ex.policy.rounds_ahead + 1


def _malformed(round_: int) -> dict[str, list[bytes]]:
    good = _message(round_, 7.0)
    return {
        "a chunk cut short": [good[0], good[1], good[2][:-8], good[3]],
        "a chunk too long": [good[0], good[1] + b"\x00" * 8, good[2], good[3]],
        "a chunk missing": good[:-1],
        "one chunk too many": [*good, b"\x00" * 8],
        "chunks in the wrong order": [good[0], good[3], good[2], good[1]],
    }


def test_malformed_payloads_from_a_member_are_dropped_and_leave_the_filed_round_intact(pair: Pair) -> None:
    one, two = pair
    ex = _exchange(one)
    _send_all(two, [_message(0, 3.0)])
    _wait_until_received(ex, lambda: len(ex.inbox.get(0, {})), 1)
    bad = _malformed(1)
    # Bad copies of the round already filed (they go to scratch) and of the next round (into its buffer).
    _send_all(two, [*_malformed(0).values(), *bad.values()])
    _wait_until_received(ex, lambda: sum(ex.dropped.values()), 2 * len(bad))
    assert ex.dropped == {"frames": 2 * len(bad)}  # each one, counted as what it is
    assert ex.ignored["duplicate"] == 0 and 1 not in ex.inbox
    assert _mixed(ex, 0) == 1.5
    _send_all(two, [_message(1, 4.0)])
    assert _mixed(ex, 1) == 2.0
