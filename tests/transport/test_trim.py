"""peernet.transport.trim: a daemon trims the heap after a hostile message, at most once a second; elsewhere nothing."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
import zmq

from peernet.transport import ZmqTransport, trim
from peernet.transport.placement import MAX_FRAMES
from peernet.transport.trim import TRIMMER, hostile_message_dropped, trim_after_hostile_messages, trim_if_due

pytestmark = pytest.mark.timeout(30)


class FakeLibc:
    def __init__(self) -> None:
        self.trims = 0

    def malloc_trim(self, pad: int) -> int:
        self.trims += 1
        return 1


class Clock:
    now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The trimmer is process-wide: each test starts with it off and untouched (a CLI test earlier in the same
    process may have turned it on, as `peernet node` does), and whatever a test turns on is undone after it."""
    for name, fresh in (("libc", None), ("pending", False), ("last_drop", float("-inf")), ("trims", 0)):
        monkeypatch.setattr(TRIMMER, name, fresh)
    monkeypatch.setattr(TRIMMER, "clock", TRIMMER.clock)
    yield


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_turning_it_on_twice_is_safe_and_a_flood_is_trimmed_once_it_stops() -> None:
    clock = Clock()
    assert trim_after_hostile_messages(clock) and trim_after_hostile_messages(clock)
    fake = FakeLibc()  # counts instead of walking the test runner's heap
    TRIMMER.libc = fake  # type: ignore[assignment]
    trim_if_due()
    assert TRIMMER.trims == 0  # nothing dropped: nothing to do
    for _ in range(5):  # a flood, one hostile message every half second: no trim while it lasts ...
        hostile_message_dropped()
        trim_if_due()
        clock.now += trim.QUIET_S / 2
    assert TRIMMER.trims == 0 and TRIMMER.pending
    clock.now += trim.QUIET_S / 2
    trim_if_due()  # ... one once it stopped
    trim_if_due()
    assert TRIMMER.trims == fake.trims == 1 and not TRIMMER.pending


def test_off_unless_a_daemon_turned_it_on(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(TRIMMER, "libc", None)
    hostile_message_dropped()
    trim_if_due()
    assert not TRIMMER.pending and TRIMMER.trims == 0

    def no_glibc(name: str) -> str:
        raise ValueError(name)

    monkeypatch.setattr(trim.os, "confstr", no_glibc)
    monkeypatch.setattr(trim.ctypes, "CDLL", lambda *a, **k: pytest.fail("must not load a C library"))
    with caplog.at_level(logging.DEBUG, logger="peernet.transport.trim"):
        assert trim_after_hostile_messages() is False
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] and TRIMMER.libc is None


def test_the_transport_trims_after_a_message_of_too_many_frames() -> None:
    fake, clock = FakeLibc(), Clock()
    TRIMMER.libc, TRIMMER.clock = fake, clock  # type: ignore[assignment]
    with ZmqTransport(1, max_msg_size=1 << 20) as victim, zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        sock.linger = 0
        sock.routing_id = b"0." + b"a" * 16
        sock.connect(victim.endpoint)
        sock.send_multipart([b"h"] * (MAX_FRAMES + 10))
        sock.send(b"honest")
        got = victim.recv(10.0)
        assert got is not None and bytes(got[1][0]) == b"honest" and victim.stats["oversize"] == 1
        assert TRIMMER.pending and fake.trims == 0
        clock.now += trim.QUIET_S  # quiet since: the next receive trims
        assert victim.recv(0.01) is None
    assert fake.trims == 1
