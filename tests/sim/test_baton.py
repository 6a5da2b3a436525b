"""The baton: one participant runs at a time, in order; virtual time advances only when all of them wait."""

from __future__ import annotations

import math
import threading

from peernet.sim.baton import Baton


def test_participants_take_turns_in_order_and_time_jumps_to_the_earliest_wakeup() -> None:
    baton = Baton([0, 1, 2])
    trace: list[tuple[int, float]] = []
    mail = {0: 0, 1: 0, 2: 0}

    def body(pid: int) -> None:
        baton.enter(pid)
        try:
            trace.append((pid, baton.now()))
            mail[(pid + 1) % 3] += 1  # "send" to the next one
            # Wait for a message, or at most 1 + pid virtual seconds.
            baton.wait(pid, 1.0 + pid, lambda: mail[pid] > 1)
            trace.append((pid, baton.now()))
        finally:
            baton.leave(pid)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10.0)
    assert not any(t.is_alive() for t in threads)
    # Everyone starts at time 0 in order; nobody gets a second message, so each waits its full timeout, and
    # virtual time jumps from one wake-up to the next: 1 s, 2 s, 3 s.
    assert trace == [(0, 0.0), (1, 0.0), (2, 0.0), (0, 1.0), (1, 2.0), (2, 3.0)]


def test_a_ready_participant_runs_before_time_advances() -> None:
    baton = Baton([0, 1])
    box: list[str] = []
    seen: list[float] = []

    def receiver() -> None:
        baton.enter(0)
        try:
            baton.wait(0, 100.0, lambda: bool(box))
            seen.append(baton.now())
        finally:
            baton.leave(0)

    def sender() -> None:
        baton.enter(1)
        try:
            box.append("hello")
        finally:
            baton.leave(1)

    threads = [threading.Thread(target=receiver), threading.Thread(target=sender)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10.0)
    assert seen == [0.0]  # woken by the message at once, not after its 100 s timeout


def test_a_wait_below_the_clocks_resolution_still_moves_time() -> None:
    """A positive wait moves virtual time by one ulp at least: a protocol run once froze at 19.7 s, where every
    node waited for the last 1.8e-15 s of its deadline and 19.7 + 1.8e-15 == 19.7."""
    baton = Baton([0])
    baton.enter(0)
    baton.wait(0, 19.7, lambda: False)
    assert baton.now() == 19.7
    baton.wait(0, 1e-16, lambda: False)
    assert baton.now() > 19.7
    baton.wait(0, 0.0, lambda: False)  # a zero wait still takes no time
    assert baton.now() == math.nextafter(19.7, math.inf)
    baton.leave(0)
