"""FaultyTransport over MemoryTransport: each fault, partitions, per-peer overrides, replay and the [faults] parser."""

from __future__ import annotations

import random
import time
import tomllib
from collections.abc import Callable, Iterator

import pytest

from peernet.errors import ConfigError, TransportError
from peernet.transport import MemoryHub, MemoryTransport, Transport
from peernet.transport.faults import INJECTED_KEYS, FaultConfig, FaultSpec, FaultyTransport, Partition

pytestmark = pytest.mark.timeout(60)

Net = Callable[..., list[FaultyTransport]]


class FakeClock:
    """A clock the test moves by hand, so delays and time windows are checked without sleeping."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def net() -> Iterator[Net]:
    """Build ``n`` fully connected wrapped memory transports (ids 0..n-1) and close them all afterwards."""
    made: list[FaultyTransport] = []

    def factory(config: FaultConfig, n: int = 2, *, clock: Callable[[], float] = time.monotonic,
                hwm: int = 10_000) -> list[FaultyTransport]:
        hub = MemoryHub()
        inner = [MemoryTransport(i, hub, hwm=hwm) for i in range(n)]
        for a in inner:
            for b in inner:
                if a is not b:
                    a.connect(b.node_id, b.endpoint)
        wrapped = [FaultyTransport(t, config, clock=clock) for t in inner]
        made.extend(wrapped)
        return wrapped

    yield factory
    for t in made:
        t.close()


def drain(t: FaultyTransport) -> list[tuple[int, list[bytes]]]:
    out = []
    while (got := t.recv(0.0)) is not None:
        out.append((got[0], [bytes(f) for f in got[1]]))
    return out


def cfg(seed: int = 0, **spec: object) -> FaultConfig:
    return FaultConfig(seed=seed, default=FaultSpec(**spec))  # type: ignore[arg-type]


def test_no_faults_delivers_everything_unchanged_in_order(net: Net) -> None:
    a, b = net(FaultConfig())
    assert isinstance(a, Transport) and a.node_id == 0 and a.endpoint == "mem://0"
    sent = [[b"h%d" % i, bytes([i]) * i] for i in range(50)]
    assert all(a.send(1, m) for m in sent)
    assert drain(b) == [(0, m) for m in sent]
    assert all(a.stats[k] == 0 for k in INJECTED_KEYS) and a.stats["msgs_out"] == 50 and b.stats["msgs_in"] == 50
    assert a.send(7, [b"x"]) is False  # the inner transport refuses an unknown peer: that is still reported


def test_drop_all_looks_like_success(net: Net) -> None:
    a, b = net(cfg(drop=1.0))
    assert all(a.send(1, [b"m"]) for _ in range(20))
    assert drain(b) == [] and a.stats["injected_drop"] == 20 and a.stats["msgs_out"] == 0


def lost_indices(net: Net, seed: int, n: int = 2000) -> set[int]:
    a, b = net(cfg(seed, drop=0.3))
    for i in range(n):
        assert a.send(1, [i.to_bytes(4, "big")])
    got = {int.from_bytes(frames[0], "big") for _, frames in drain(b)}
    assert a.stats["injected_drop"] == n - len(got)
    return set(range(n)) - got


def test_drop_rate_and_replay(net: Net) -> None:
    lost = lost_indices(net, seed=0)
    assert abs(len(lost) / 2000 - 0.3) < 0.05
    assert lost_indices(net, seed=0) == lost  # same seed, same calls: the same messages are lost
    assert lost_indices(net, seed=1) != lost


def test_duplicate_delivers_every_message_twice(net: Net) -> None:
    a, b = net(cfg(duplicate=1.0))
    for i in range(10):
        assert a.send(1, [bytes([i])])
    assert [f[0] for _, f in drain(b)] == [bytes([i]) for i in range(10) for _ in range(2)]
    assert a.stats["injected_duplicate"] == 10


def test_corrupt_changes_exactly_one_byte_of_a_copy(net: Net) -> None:
    a, b = net(cfg(corrupt=1.0))
    rng = random.Random(5)
    for _ in range(30):
        payload = bytearray(rng.randbytes(rng.randrange(1, 300)))
        frames: list[bytes | memoryview] = [b"header", memoryview(payload), b""]
        before = [bytes(f) for f in frames]
        assert a.send(1, frames)
        assert [bytes(f) for f in frames] == before  # the caller's buffers are untouched
        ((_, got),) = drain(b)
        diffs = [(i, j) for i, (x, y) in enumerate(zip(before, got, strict=True))
                 for j in range(len(x)) if x[j] != y[j]]
        assert len(diffs) == 1 and [len(f) for f in got] == [len(f) for f in before]
    assert a.send(1, [b""]) and drain(b) == [(0, [b""])]  # nothing to corrupt in an empty frame
    assert a.stats["injected_corrupt"] == 30


def test_delay_holds_messages_until_due_on_a_fake_clock(net: Net) -> None:
    clock = FakeClock()
    a, b = net(cfg(delay_ms=(50, 60)), clock=clock)
    buf = bytearray(b"original")
    assert a.send(1, [memoryview(buf)]) and a.send(1, [b"second"])
    buf[:] = b"mutated!"  # the caller may reuse its buffer once send returned
    clock.t = 0.0499
    a.pump()
    assert drain(b) == []
    clock.t = 0.0601
    a.pump()
    assert sorted(f[0] for _, f in drain(b)) == [b"original", b"second"]
    assert a.stats["injected_delay"] == 2


def test_recv_releases_delayed_messages_on_time_and_keeps_its_timeout() -> None:
    hub = MemoryHub()
    inner = MemoryTransport(0, hub)
    inner.connect(0, inner.endpoint)  # a node that sends to itself both delays and receives
    t = FaultyTransport(inner, cfg(delay_ms=(50, 60)))
    start = time.monotonic()
    assert t.send(0, [b"late"])
    got = t.recv(5.0)
    elapsed = time.monotonic() - start
    assert got is not None and bytes(got[1][0]) == b"late"
    assert 0.05 <= elapsed < 1.0  # not before its delay, and not at the end of the 5 s timeout
    start = time.monotonic()
    assert t.recv(0.2) is None
    assert 0.2 <= time.monotonic() - start < 1.0
    t.close()
    with pytest.raises(TransportError):
        t.send(0, [b"x"])


def test_reorder_swaps_each_held_message_with_the_next(net: Net) -> None:
    a, b = net(cfg(reorder=1.0))
    for m in (b"1", b"2", b"3", b"4"):
        assert a.send(1, [m])
    assert [f[0] for _, f in drain(b)] == [b"2", b"1", b"4", b"3"]
    assert a.stats["injected_reorder"] == 2


def test_reorder_without_a_successor_is_released_after_the_hold(net: Net) -> None:
    clock = FakeClock()
    a, b = net(cfg(reorder=1.0, reorder_hold_ms=100), clock=clock)
    assert a.send(1, [b"alone"])
    clock.t = 0.05
    a.pump()
    assert drain(b) == []
    clock.t = 0.1
    assert a.recv(0.0) is None  # recv pumps too
    assert drain(b) == [(0, [b"alone"])]


def exchange(nodes: list[FaultyTransport]) -> set[tuple[int, int]]:
    """Every node sends to every other; the (sender, receiver) pairs that got through."""
    for t in nodes:
        for peer in range(len(nodes)):
            if peer != t.node_id:
                assert t.send(peer, [b"x"])
    return {(s, t.node_id) for t in nodes for s, _ in drain(t)}


def test_partition_by_round_cuts_both_ways_and_heals(net: Net) -> None:
    part = Partition(groups=(frozenset({0, 1}), frozenset({2, 3})), from_round=5, to_round=8)
    nodes = net(FaultConfig(partitions=(part,)), 4)
    everyone = {(i, j) for i in range(4) for j in range(4) if i != j}
    for r in range(10):
        for t in nodes:
            t.set_round(r)
        expected = {(0, 1), (1, 0), (2, 3), (3, 2)} if 5 <= r < 8 else everyone
        assert exchange(nodes) == expected, r
    assert sum(t.stats["partition_drop"] for t in nodes) == 3 * 8


def test_partition_by_time_and_unlisted_nodes_form_one_group(net: Net) -> None:
    clock = FakeClock()
    part = Partition(groups=(frozenset({3}),), from_time=1.0, to_time=2.0)
    nodes = net(FaultConfig(partitions=(part,)), 4, clock=clock)
    everyone = {(i, j) for i in range(4) for j in range(4) if i != j}
    assert exchange(nodes) == everyone
    clock.t = 1.5
    assert exchange(nodes) == {p for p in everyone if 3 not in p}
    clock.t = 2.0
    assert exchange(nodes) == everyone


def test_per_peer_overrides(net: Net) -> None:
    config = FaultConfig(default=FaultSpec(duplicate=1.0), peers={2: FaultSpec(drop=1.0)})
    a, b, c = net(config, 3)
    assert a.send(1, [b"to1"]) and a.send(2, [b"to2"])
    assert len(drain(b)) == 2 and drain(c) == []


def test_refused_delayed_message_is_retried_and_backpressures_new_sends(net: Net) -> None:
    clock = FakeClock()
    a, b = net(cfg(delay_ms=(10, 10)), clock=clock, hwm=1)
    assert a.send(1, [b"1"]) and a.send(1, [b"2"])
    clock.t = 0.02
    a.pump()  # "1" fills the receiver's pipe, "2" is refused and kept
    assert a.send(1, [b"3"]) is False
    assert drain(b) == [(0, [b"1"])]
    clock.t = 0.03
    a.pump()
    assert a.send(1, [b"3"])
    clock.t = 0.05
    a.pump()
    assert [f[0] for _, f in drain(b)] == [b"2"]


def test_disconnect_discards_what_is_still_delayed(net: Net) -> None:
    clock = FakeClock()
    a, b = net(cfg(delay_ms=(10, 20)), clock=clock)
    assert a.send(1, [b"lost"])
    a.disconnect(1)
    a.connect(1, b.endpoint)
    clock.t = 1.0
    a.pump()
    assert drain(b) == []
    with pytest.raises(TransportError):
        a.send(1, [])


def scenario(net: Net, seed: int) -> tuple[list[tuple[int, list[bytes]]], dict[str, int]]:
    clock = FakeClock()
    config = cfg(seed, drop=0.2, duplicate=0.2, reorder=0.2, corrupt=0.2, delay_ms=(0, 30))
    a, b = net(config, clock=clock)
    got = []
    for i in range(300):
        clock.t += 0.001
        a.send(1, [i.to_bytes(2, "big") * 8])
        got += drain(b)
    clock.t += 10
    a.pump()
    return got + drain(b), {k: a.stats[k] for k in INJECTED_KEYS}


def test_a_scenario_replays_exactly(net: Net) -> None:
    first = scenario(net, seed=3)
    assert all(first[1][k] > 0 for k in INJECTED_KEYS if k != "partition_drop")
    assert scenario(net, seed=3) == first
    assert scenario(net, seed=4) != first


NODE_TOML = """
id = 3
[faults]
seed = 7
drop = 0.05
delay_ms = [0, 100]
[faults.peers.3]
drop = 0.5
[faults.peers.5]
corrupt = 1
reorder-hold-ms = 20
[[faults.partitions]]
groups = [[0, 1, 2, 3], [4, 5, 6, 7]]
from_round = 50
to_round = 80
[[faults.partitions]]
groups = [[6]]
from_time = 30.5
"""


def test_parse_faults_section() -> None:
    config = FaultConfig.from_mapping(tomllib.loads(NODE_TOML)["faults"], "node/node3.toml")
    default = FaultSpec(drop=0.05, delay_ms=(0.0, 100.0))
    assert config == FaultConfig(
        seed=7, default=default,
        peers={3: FaultSpec(drop=0.5, delay_ms=(0.0, 100.0)),  # overrides inherit the section's other keys
               5: FaultSpec(drop=0.05, delay_ms=(0.0, 100.0), corrupt=1.0, reorder_hold_ms=20.0)},
        partitions=(Partition(groups=(frozenset(range(4)), frozenset(range(4, 8))), from_round=50, to_round=80),
                    Partition(groups=(frozenset({6}),), from_time=30.5)))
    assert FaultConfig.from_mapping({}) == FaultConfig()
    assert Partition(groups=([1, 2],)).groups == (frozenset({1, 2}),)  # type: ignore[arg-type]


@pytest.mark.parametrize(("toml", "key"), [
    ("dropp = 0.1", "faults.dropp"),
    ("drop = 1.5", "faults.drop"),
    ("drop = true", "faults.drop"),
    ("duplicate = -0.1", "faults.duplicate"),
    ("reorder = 'often'", "faults.reorder"),
    ("delay_ms = [100, 0]", "faults.delay_ms"),
    ("delay_ms = [1, 2, 3]", "faults.delay_ms"),
    ("delay_ms = 5", "faults.delay_ms"),
    ("seed = 1.5", "faults.seed"),
    ("peers = 3", "faults.peers"),
    ("[faults.peers.3]\ncorrupt = 2", "faults.peers.3.corrupt"),
    ("[faults.peers.3]\nlag = 2", "faults.peers.3.lag"),
    ("[faults.peers.x]\ndrop = 0.1", "faults.peers.x"),
    ("[[faults.partitions]]\nfrom_round = 3", "faults.partitions[0].groups"),
    ("[[faults.partitions]]\ngroups = [[0, 1], [1, 2]]", "faults.partitions[0].groups"),
    ("[[faults.partitions]]\ngroups = [0, 1]", "faults.partitions[0].groups"),
    ("[[faults.partitions]]\ngroups = [[0]]\nfrom_round = 80\nto_round = 50", "faults.partitions[0].to_round"),
    ("[[faults.partitions]]\ngroups = [[0]]\nfrom_time = -1.0", "faults.partitions[0].from_time"),
    ("[[faults.partitions]]\ngroups = [[0]]\nuntil = 3", "faults.partitions[0].until"),
])
def test_bad_faults_section_names_file_and_key(toml: str, key: str) -> None:
    data = tomllib.loads("[faults]\n" + toml)["faults"]
    with pytest.raises(ConfigError) as info:
        FaultConfig.from_mapping(data, "node/node3.toml")
    assert info.value.key == key and info.value.file == "node/node3.toml"
    assert "node/node3.toml" in str(info.value) and key in str(info.value)


def test_spec_validation_without_a_file() -> None:
    with pytest.raises(ConfigError, match="probability") as info:
        FaultSpec(corrupt=float("nan"))
    assert info.value.key == "corrupt"
    with pytest.raises(ConfigError) as info:
        FaultSpec(delay_ms=(0, float("inf")))
    assert info.value.key == "delay_ms"
