"""Rate-limited warnings: one per kind and interval, and the held-back count reported on its own once it is due."""

from __future__ import annotations

import logging

import pytest

from peernet.ratelimit import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int]]:
    """(kind, held back before it) of every record, from the records' attributes, never their wording."""
    return [(r.ratelimit_key, r.suppressed) for r in caplog.records]  # type: ignore[attr-defined]


@pytest.fixture
def limited(caplog: pytest.LogCaptureFixture) -> tuple[RateLimitedLog, Clock]:
    caplog.set_level(logging.WARNING, logger="test.ratelimit")
    clock = Clock()
    return RateLimitedLog(logging.getLogger("test.ratelimit"), every=10.0, clock=clock), clock


def test_a_burst_is_one_warning_and_its_count_comes_once_due(limited: tuple[RateLimitedLog, Clock],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    log, clock = limited
    for i in range(50):
        log.warning("drop:size", "dropped %d", i)
        if i < 3:
            log.warning("drop:run", "dropped %d", i)
    assert records(caplog) == [("drop:size", 0), ("drop:run", 0)]
    clock.now += 9.9
    assert log.flush() == 0 and len(caplog.records) == 2  # not due yet
    clock.now += 0.1
    assert log.flush() == 2
    assert sorted(records(caplog)[2:]) == [("drop:run", 2), ("drop:size", 49)]
    assert log.flush() == 0  # reported once
    log.warning("drop:size", "dropped again")
    assert records(caplog)[-1] == ("drop:size", 0)  # the flushed count is not repeated


def test_without_a_flush_the_next_warning_carries_the_count(limited: tuple[RateLimitedLog, Clock],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    log, clock = limited
    for _ in range(5):
        log.warning("bad-request", "bad")
    clock.now += 10
    log.warning("bad-request", "bad")
    assert records(caplog) == [("bad-request", 0), ("bad-request", 4)]


def test_forced_flush_reports_everything_held_back(limited: tuple[RateLimitedLog, Clock],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    log, _ = limited
    assert log.flush(force=True) == 0  # nothing held back: nothing said
    log.warning("hint", "x")
    log.warning("hint", "x")
    assert log.flush(now=100.0, force=True) == 1
    assert records(caplog) == [("hint", 0), ("hint", 1)]
