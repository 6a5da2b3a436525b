"""Fault-injecting transport wrapper: seeded drop, delay, duplication, reordering, corruption and partitions."""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from peernet.config import from_mapping
from peernet.errors import ConfigError, TransportError

if TYPE_CHECKING:  # peernet.transport's __init__ may one day import this module: no runtime import cycle
    from peernet.transport import Place, Transport

T = TypeVar("T")
Frames = list[bytes | memoryview]

INJECTED_KEYS = ("injected_drop", "injected_delay", "injected_duplicate", "injected_reorder", "injected_corrupt",
                 "partition_drop")
# Every message draws this many uniforms whatever happens to it, so the n-th message to a peer always meets the
# same decisions: changing one fault rate, or a time-based partition, never shifts the others' random stream.
_DRAWS = 9
# How often a delayed message that the inner transport refused (peer's queue full) is offered again, seconds.
_RETRY_S = 0.005


@dataclass(frozen=True)
class FaultSpec:
    """Faults on the messages sent to one peer (or to every peer without an override)."""

    drop: float = 0.0  # probability a message is lost
    delay_ms: tuple[float, float] = (0.0, 0.0)  # uniform extra latency [low, high], milliseconds
    duplicate: float = 0.0  # probability a message is delivered twice
    reorder: float = 0.0  # probability a message is held back until after the next one to that peer
    corrupt: float = 0.0  # probability one random byte of one random frame is changed
    reorder_hold_ms: float = 1000.0  # a held-back message that gets no successor goes out after this long

    def __post_init__(self) -> None:
        object.__setattr__(self, "delay_ms", tuple(float(v) for v in self.delay_ms))  # a list from Python is fine
        for key in ("drop", "duplicate", "reorder", "corrupt"):
            if not 0.0 <= getattr(self, key) <= 1.0:  # also rejects NaN
                raise ConfigError(f"must be a probability in [0, 1], got {getattr(self, key)}", key=key)
        if len(self.delay_ms) != 2 or not 0.0 <= self.delay_ms[0] <= self.delay_ms[1] < math.inf:
            raise ConfigError(f"needs [low, high] with 0 <= low <= high, got {list(self.delay_ms)}", key="delay_ms")
        if not 0.0 <= self.reorder_hold_ms < math.inf:
            raise ConfigError(f"must be >= 0 and finite, got {self.reorder_hold_ms}", key="reorder_hold_ms")


@dataclass(frozen=True)
class Partition:
    """Messages between groups are dropped while the round and/or time window applies (from ≤ x < to).

    Nodes listed in no group form one more group together, so ``groups = [[3]]`` cuts node 3 off from the rest.
    Times are seconds since the sender's wrapper started; rounds are the sender's (see ``set_round``).
    """

    groups: tuple[frozenset[int], ...]
    from_round: int | None = None
    to_round: int | None = None
    from_time: float | None = None
    to_time: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(frozenset(g) for g in self.groups))  # lists from Python are fine
        members = [n for g in self.groups for n in g]
        if not self.groups or not all(self.groups) or min(members) < 0 or len(set(members)) < len(members):
            raise ConfigError("needs non-empty groups of node ids >= 0, each node in at most one group, got "
                              f"{[sorted(g) for g in self.groups]}", key="groups")
        for lo_key, hi_key in (("from_round", "to_round"), ("from_time", "to_time")):
            lo, hi = getattr(self, lo_key), getattr(self, hi_key)
            bad = next((k for k, v in ((lo_key, lo), (hi_key, hi)) if v is not None and not 0 <= v < math.inf), None)
            if bad or (lo is not None and hi is not None and not lo < hi):
                raise ConfigError(f"needs 0 <= {lo_key} < {hi_key}, got {lo} and {hi}", key=bad or hi_key)

    def applies(self, round_: int, elapsed: float) -> bool:
        """Whether the partition is in force at this round and this many seconds after start."""
        return all((lo is None or lo <= v) and (hi is None or v < hi) for lo, hi, v in (
            (self.from_round, self.to_round, round_), (self.from_time, self.to_time, elapsed)))

    def separates(self, a: int, b: int) -> bool:
        """Whether nodes ``a`` and ``b`` are on different sides."""
        side = [next((i for i, g in enumerate(self.groups) if n in g), -1) for n in (a, b)]
        return side[0] != side[1]


@dataclass(frozen=True)
class FaultConfig:
    """A node's ``[faults]`` section: the seed, default faults, per-peer overrides and partitions."""

    seed: int = 0
    default: FaultSpec = field(default_factory=FaultSpec)
    peers: dict[int, FaultSpec] = field(default_factory=dict)
    partitions: tuple[Partition, ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str | None = None, *,
                     section: str = "faults") -> FaultConfig:
        """Parse ``[faults]``; ``[faults.peers.N]`` overrides only the keys it names. Errors name file and key."""
        data = _table(data, section, source)
        extra = {k: data.pop(k) for k in ("seed", "peers", "partitions") if k in data}
        default = from_mapping(FaultSpec, data, source=source, section=section, also=", partitions, peers, seed")
        peers = {}
        for name, table in _table(extra.get("peers", {}), f"{section}.peers", source).items():
            if not name.isdigit():
                raise ConfigError("expected a node id (integer >= 0)", file=source, key=f"{section}.peers.{name}")
            peers[int(name)] = from_mapping(FaultSpec, _table(table, f"{section}.peers.{name}", source), source=source,
                                            section=f"{section}.peers.{name}", base=default)
        parts = extra.get("partitions", [])
        if not isinstance(parts, list):
            raise ConfigError("expected [[faults.partitions]] tables", file=source, key=f"{section}.partitions")
        seed = from_mapping(_Seed, {"seed": extra.get("seed", 0)}, source=source, section=section).seed
        return cls(seed=seed, default=default, peers=peers,
                   partitions=tuple(from_mapping(Partition, _table(t, f"{section}.partitions[{i}]", source),
                                                 source=source, section=f"{section}.partitions[{i}]")
                                    for i, t in enumerate(parts)))


@dataclass(frozen=True)
class _Seed:
    seed: int = 0


def _table(data: Any, key: str, source: str | None) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a table, got {type(data).__name__}", file=source, key=key)
    return {str(k): v for k, v in data.items()}


class FaultyTransport:
    """A :class:`~peernet.transport.Transport` that injects seeded faults into what ``inner`` sends.

    Faults are applied at the sender side only: incoming messages pass through unchanged; as each node runs
    its own wrapper, both ends of a partition drop what they would send across it. ``send`` applies partition
    → drop → corrupt → duplicate → reorder/delay and returns True for a message accepted (maybe for later) or
    dropped on purpose, as a real network would; False when the inner transport refuses it, or still refuses
    an earlier delayed message to that peer (as a full queue would). Delayed and held-back messages wait here,
    copied, until :meth:`pump` (called by ``send`` and ``recv``) hands them over. One ``random.Random`` per peer,
    seeded with (seed, node id, peer id), makes the same calls replay the same faults. Use from one thread.
    """

    def __init__(self, inner: Transport, config: FaultConfig, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.config = config
        self.node_id: int = inner.node_id
        self.endpoint: str = inner.endpoint
        self.stats: dict[str, int] = {**inner.stats, **dict.fromkeys(INJECTED_KEYS, 0)}
        self._clock = clock
        self._start = clock()
        self._round = 0
        self._rngs: dict[int, random.Random] = {}
        self._heap: list[tuple[float, int, int, Frames]] = []  # (due, sequence number, peer, frames)
        self._seq = itertools.count()
        self._held: dict[int, tuple[float, float, Frames]] = {}  # peer -> (release by, own due time, frames)
        self._refused: set[int] = set()  # peers whose inner queue refused a due message at the last try
        self._closed = False

    def set_round(self, round_: int) -> None:
        """The sender's current round, for round-based partitions."""
        self._round = round_

    def connect(self, peer_id: int, endpoint: str) -> None:
        self.inner.connect(peer_id, endpoint)

    def disconnect(self, peer_id: int) -> None:
        """Drop the connection and whatever this wrapper still holds for the peer, as the inner queue is dropped."""
        self.inner.disconnect(peer_id)
        self._held.pop(peer_id, None)
        self._refused.discard(peer_id)
        self._heap = [m for m in self._heap if m[2] != peer_id]
        heapq.heapify(self._heap)

    def send(self, peer_id: int, frames: Sequence[bytes | memoryview]) -> bool:
        if self._closed:  # a drop would otherwise "succeed" on a closed transport
            raise TransportError(f"node {self.node_id}: transport is closed")
        if not frames:  # checked here too: a delayed empty message would only fail later, inside pump()
            raise TransportError(f"node {self.node_id}: refusing to send an empty message to peer {peer_id}")
        self.pump()
        if peer_id in self._refused:
            return False
        spec = self.config.peers.get(peer_id, self.config.default)
        if (rng := self._rngs.get(peer_id)) is None:  # a str seed is hashed with SHA-512: stable, unlike hash()
            rng = self._rngs[peer_id] = random.Random(f"peernet-faults:{self.config.seed}:{self.node_id}:{peer_id}")
        u = [rng.random() for _ in range(_DRAWS)]
        now = self._clock()
        if any(p.applies(self._round, now - self._start) and p.separates(self.node_id, peer_id)
               for p in self.config.partitions):
            return self._count("partition_drop")
        if u[0] < spec.drop:
            return self._count("injected_drop")
        out: Frames = list(frames)
        if u[1] < spec.corrupt and _corrupt(out, u[2], u[3], u[4]):
            self._count("injected_corrupt")
        low, high = spec.delay_ms
        delays = [(low + v * (high - low)) / 1000.0 for v in u[5:7]]
        if u[7] < spec.duplicate:
            self._count("injected_duplicate")
        else:
            delays.pop()
        hold = u[8] < spec.reorder and peer_id not in self._held  # at most one held per peer: the next one swaps
        if hold:  # held messages and delayed ones are copied: the caller may reuse its buffers once send returns
            self._held[peer_id] = (now + spec.reorder_hold_ms / 1000.0, now + delays.pop(0), [bytes(f) for f in out])
            self._count("injected_reorder")
        sent: list[float | None] = []  # when each copy goes out; None: the inner transport refused it
        for delay in delays:
            if delay > 0:
                self._count("injected_delay")
                self._push(now + delay, peer_id, [bytes(f) for f in out])
            sent.append(now + delay if delay > 0 or self.inner.send(peer_id, out) else None)
        held = self._held.pop(peer_id, None) if not hold and sent[0] is not None else None
        if held is not None:  # released right behind the message that overtook it
            self._push(max(max(t for t in sent if t is not None), held[1]), peer_id, held[2])
        self.pump()
        return hold or sent[0] is not None

    def _push(self, due: float, peer_id: int, frames: Frames) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), peer_id, frames))

    def pump(self) -> None:
        """Hand every due delayed message (and held-back ones that waited long enough) to the inner transport."""
        now = self._clock()
        for peer in [p for p, h in self._held.items() if h[0] <= now]:
            _, due, frames = self._held.pop(peer)
            self._push(max(due, now), peer, frames)
        blocked: set[int] = set()
        while self._heap and self._heap[0][0] <= now:
            _, seq, peer, frames = heapq.heappop(self._heap)
            if peer not in blocked and self.inner.send(peer, frames):
                self._refused.discard(peer)
            else:  # retried later (not in this loop: due > now); no later message to that peer may overtake it
                blocked.add(peer)
                self._refused.add(peer)
                heapq.heappush(self._heap, (now + _RETRY_S, seq, peer, frames))
        self.stats.update(self.inner.stats)

    def recv(self, timeout: float, place: Place | None = None) -> tuple[int, list[memoryview]] | None:
        """Wait up to ``timeout`` seconds for one message, releasing delayed outgoing ones on time meanwhile."""
        # Timeouts and the fault schedule both follow self._clock: the daemon passes its own (virtual time
        # in the protocol simulator, where the inner transport's waits advance that clock).
        now = self._clock()
        deadline = now + max(timeout, 0.0)
        if timeout > 0 and deadline <= now:
            # The rest of a caller's wait can be smaller than the clock's last bit (virtual time far from zero):
            # waiting for nothing would leave the caller's deadline a hair away for ever, so wait one ulp.
            deadline = math.nextafter(now, math.inf)
        while True:
            self.pump()
            wait = deadline - self._clock()
            due = min([h[0] for h in self._held.values()] + [m[0] for m in self._heap[:1]], default=None)
            if due is not None:
                wait = min(wait, due - self._clock())
            got = self.inner.recv(max(wait, 0.0), place)
            self.stats.update(self.inner.stats)
            if got is not None or self._clock() >= deadline:
                return got

    def in_flight(self) -> int:
        """Messages still delayed or held back here: a node about to exit waits for them (exchange.goodbye)."""
        return len(self._heap) + len(self._held)

    def close(self) -> None:
        """Discard what is still delayed (like linger 0) and close the inner transport; idempotent."""
        self._closed = True
        self._heap, self._held, self._refused = [], {}, set()
        self.inner.close()

    def _count(self, key: str) -> bool:
        self.stats[key] += 1
        return True


def _corrupt(frames: Frames, u_frame: float, u_byte: float, u_mask: float) -> bool:
    """Change one byte of one non-empty frame, in a copy of that frame; False if every frame is empty."""
    candidates = [i for i, f in enumerate(frames) if memoryview(f).nbytes]
    if not candidates:
        return False
    i = candidates[int(u_frame * len(candidates))]
    buf = bytearray(frames[i])  # the copy: the caller's buffer is never touched
    buf[int(u_byte * len(buf))] ^= 1 + int(u_mask * 255)  # a non-zero mask, so the byte always differs
    frames[i] = memoryview(buf)
    return True
