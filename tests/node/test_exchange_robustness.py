"""Nothing one message from a member can carry ends the node: implausible values are dropped as `value`,
and any failure while acting on a message is dropped as `handling`, counted and blamed on its sender.

The messages are built here with msgpack directly (not with peernet's encoder), from the compromised
member's own transport: every one passes the codec, which is what makes them dangerous.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peernet.errors import TransportError
from peernet.node.exchange import MAX_EPOCH, Exchange
from peernet.transport import MemoryHub, MemoryTransport, ZmqTransport
from peernet.wire.codec import TensorSpec
from peernet.wire.messages import PROTOCOL_VERSION

pytestmark = pytest.mark.timeout(120)

RUN = "0" * 16
LAYOUT = {"x": TensorSpec("x", "float64", (4,))}
INT64 = (1 << 63) - 1


def control(kind: str, *, sender: int = 1, round_: int = 0, degree: int = 1, epoch: int = 0,
            **meta: Any) -> list[bytes]:
    """A control message (hello, bye, ping) as raw msgpack, the way an attacker's own code would write it."""
    return [msgpack.packb({"version": PROTOCOL_VERSION, "run": RUN, "sender": sender, "round": round_,
                           "kind": kind, "degree": degree, "epoch": epoch, "tensors": [], "meta": meta})]


def victim(hub: MemoryHub) -> tuple[Exchange, MemoryTransport]:
    """Node 0 with neighbours 1 (the compromised member) and 2, a 100-round run; and node 1's transport."""
    t0, t1 = MemoryTransport(0, hub), MemoryTransport(1, hub)
    t0.connect(1, t1.endpoint)
    t1.connect(0, t0.endpoint)
    ex = Exchange(t0, 0, RUN, {1: 1 / 3, 2: 1 / 3}, LAYOUT, last_round=100, degrees={1: 2, 2: 2})
    return ex, t1


@pytest.mark.parametrize(("message", "why"), [
    (control("hello", endpoint="tcp://127.0.0.1:99999"), "value"),  # no such port
    (control("hello", endpoint="tcp://evil host:1"), "value"),
    (control("hello", endpoint="ipc:///" + "x" * 200), "value"),  # longer than a Unix socket path can be
    (control("hello", endpoint="ipc://*"), "value"),  # a random path, which no neighbour can dial
    (control("hello", epoch=INT64), "value"),  # +1 on a restart would overflow the wire's int64
    (control("ping", epoch=MAX_EPOCH + 1), "value"),
    (control("hello", round_=INT64, reply=True), "round"),  # the codec's own bound: too far ahead
    (control("ping", degree=10**9), "value"),
])
def test_implausible_values_are_dropped_and_the_node_goes_on(message: list[bytes], why: str) -> None:
    hub = MemoryHub()
    ex, attacker = victim(hub)
    _check_dropped(ex, attacker, message, why)


def test_while_rejoining_a_reply_from_past_the_run_is_not_believed() -> None:
    """A rejoining node accepts any round (it is looking for its neighbours'); the run's end still bounds it."""
    hub = MemoryHub()
    ex, attacker = victim(hub)
    ex.joining = True
    _check_dropped(ex, attacker, control("hello", round_=10**12, reply=True), "value")


def _check_dropped(ex: Exchange, attacker: MemoryTransport, message: list[bytes], why: str) -> None:
    assert attacker.send(0, message)
    assert ex.poll(0, timeout=1.0)
    assert ex.dropped == {why: 1}
    assert ex.replies == {} and ex.seen_round == {}  # nothing of it was believed
    assert ex.transport.connected() == {1: "mem://1"}  # no connection was changed


def test_a_failure_while_acting_on_a_message_is_dropped_and_blamed(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = MemoryHub()
    ex, attacker = victim(hub)

    def broken(j: int) -> None:
        raise RuntimeError("whatever acting on this message can raise")

    monkeypatch.setattr(ex.edges, "peer_restarted", broken)
    assert attacker.send(0, control("hello", reset=True))
    assert ex.poll(0, timeout=1.0)
    assert ex.dropped == {"handling": 1} and ex.faulty == {1: 1}


def test_a_bad_endpoint_in_a_hello_keeps_the_real_connection() -> None:
    """Over ZeroMQ: a hello naming an endpoint that cannot be dialled does not cut the working link."""
    with ZmqTransport(0, bind="tcp://127.0.0.1:*") as t0, ZmqTransport(1, bind="tcp://127.0.0.1:*") as t1:
        ex = Exchange(t0, 0, RUN, {1: 0.5}, LAYOUT, last_round=100, degrees={1: 1})
        t0.connect(1, t1.endpoint)
        t1.connect(0, t0.endpoint)
        with pytest.raises(TransportError):  # libzmq refuses it: the transport reports that ...
            t0.connect(1, "tcp://127.0.0.1")
        assert t0.connected() == {1: t1.endpoint}  # ... and keeps the connection it had
        for message in (control("hello", endpoint="tcp://127.0.0.1:0"), control("hello", endpoint="tcp://:5")):
            deadline = 50
            while not t1.send(0, message) and deadline:
                deadline -= 1
                t1.recv(0.05)
            assert ex.poll(0, timeout=5.0)
        assert t0.connected() == {1: t1.endpoint}
        assert sum(ex.dropped.values()) == 2


# Mostly values near a real run's (so the codec lets the message through to the node), sometimes any int64.
FIELDS = st.one_of(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=INT64))
META = st.dictionaries(st.sampled_from(["endpoint", "reset", "reply", "live", "full", "x"]),
                       st.one_of(st.booleans(), st.integers(min_value=-(1 << 63), max_value=INT64),
                                 st.text(max_size=40), st.sampled_from(["tcp://127.0.0.1:1", "mem://1",
                                                                        "mem://2", "tcp://[::1]:70000"])),
                       max_size=4)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kinds=st.lists(st.sampled_from(["hello", "bye", "ping"]), min_size=1, max_size=6),
       rounds=st.lists(FIELDS, min_size=6, max_size=6), epochs=st.lists(FIELDS, min_size=6, max_size=6),
       degrees=st.lists(FIELDS, min_size=6, max_size=6), metas=st.lists(META, min_size=6, max_size=6))
def test_no_sequence_of_well_formed_control_messages_stops_the_node(
        kinds: list[str], rounds: list[int], epochs: list[int], degrees: list[int],
        metas: list[dict[str, Any]]) -> None:
    hub = MemoryHub()
    ex, attacker = victim(hub)
    honest = MemoryTransport(2, hub)
    honest.connect(0, "mem://0")
    ex.transport.connect(2, honest.endpoint)  # type: ignore[attr-defined]
    for i, kind in enumerate(kinds):
        attacker.send(0, control(kind, round_=rounds[i], degree=degrees[i], epoch=epochs[i], **metas[i]))
        ex.poll(0, timeout=0.0)  # must never raise
    # The node still completes a round with its honest neighbour (node 1 may have said bye or be excluded).
    ex.policy = ex.deadline.policy = type(ex.policy)(floor=0.01, ceiling=0.05)
    tensors = {"x": torch.ones(4, dtype=torch.float64)}
    mine = ex.gossip_for(0)
    honest_frames = _round_message(2)
    honest.send(0, honest_frames)
    out = mine(**tensors)
    assert torch.isfinite(out["x"]).all()


def _round_message(sender: int) -> list[bytes]:
    x = torch.full((4,), 2.0, dtype=torch.float64)
    head = {"version": PROTOCOL_VERSION, "run": RUN, "sender": sender, "round": 0, "kind": "round", "degree": 2,
            "epoch": 0, "tensors": [{"name": "x", "dtype": "float64", "shape": [4], "nbytes": 32}],
            "meta": {"live": True, "full": True}}
    return [msgpack.packb(head), x.numpy().tobytes()]


def test_an_announced_endpoint_is_followed_only_when_the_trusted_table_agrees() -> None:
    hub = MemoryHub()
    t0, t1 = MemoryTransport(0, hub), MemoryTransport(1, hub)
    decoy = MemoryTransport(5, hub)  # where the member would like node 0 to send its tensors
    trusted = {1: "mem://1"}
    ex = Exchange(t0, 0, RUN, {1: 0.5}, LAYOUT, last_round=100, degrees={1: 1}, trusted_endpoints=trusted)
    t0.connect(1, "mem://1")
    t1.connect(0, t0.endpoint)
    assert t1.send(0, control("hello", endpoint="mem://5"))
    assert ex.poll(0, timeout=1.0)
    assert ex.ignored["endpoint_hint"] == 1 and t0.connected() == {1: "mem://1"}  # not redirected
    trusted[1] = "mem://5"  # the bootstrap's table says node 1 moved: now the same hello is followed
    assert t1.send(0, control("hello", endpoint="mem://5"))
    assert ex.poll(0, timeout=1.0)
    assert t0.connected() == {1: "mem://5"}
    decoy.close()
