"""The round policy's decisions, each branch driven with plain numbers (no network, no clock)."""

from __future__ import annotations

import math

import pytest

from peernet.core.rounds import AdaptiveDeadline, RoundPolicy
from peernet.errors import ConfigError

POLICY = RoundPolicy(floor=1.0, ceiling=8.0, factor=10.0, window=5)


def test_adaptive_deadline_between_floor_and_ceiling() -> None:
    dl = AdaptiveDeadline(POLICY)
    assert dl.current() == 8.0  # nothing measured yet: patient
    for _ in range(5):
        dl.record(0.01)
    assert dl.current() == 1.0  # fast rounds: the floor
    for _ in range(5):
        dl.record(0.5)
    assert dl.current() == 5.0  # 10 × median
    for _ in range(5):
        dl.record(3.0)
    assert dl.current() == 8.0  # capped


def test_gives_up_on_silent_neighbours_after_the_patience_and_on_everyone_at_the_ceiling() -> None:
    assert not POLICY.give_up(elapsed=0.5, patience=1.0, silences=[math.inf])  # before the patience: wait
    assert POLICY.give_up(elapsed=1.0, patience=1.0, silences=[1.0, math.inf])  # all silent: give up
    assert not POLICY.give_up(elapsed=3.0, patience=1.0, silences=[5.0, 0.2])  # one still pings: keep waiting
    assert POLICY.give_up(elapsed=8.0, patience=1.0, silences=[0.0])  # the ceiling ends every wait


def test_catches_up_only_when_every_neighbour_is_two_rounds_ahead() -> None:
    assert POLICY.catch_up_to(10, [12, 15]) == 12
    assert POLICY.catch_up_to(10, [11, 15]) is None  # behind one neighbour only: stay in step
    assert POLICY.catch_up_to(10, []) is None


def test_a_neighbour_went_on_two_rounds_ahead_not_one() -> None:
    assert POLICY.went_on(12, 10) and not POLICY.went_on(11, 10) and not POLICY.went_on(-1, 0)


def test_accepts_messages_up_to_rounds_ahead_and_notices_a_stall_past_the_floor() -> None:
    assert [POLICY.accepts(5, r) for r in (4, 5, 7, 8)] == [False, True, True, False]
    assert RoundPolicy(rounds_ahead=3).accepts(5, 8)
    assert POLICY.stalled(1.01) and not POLICY.stalled(1.0)


def test_rejoin_round_and_checkpoint_choice() -> None:
    assert RoundPolicy.rejoin_round(40, [52, 47, 60]) == 47  # the slowest neighbour's round
    assert RoundPolicy.rejoin_round(40, [30]) == 40 and RoundPolicy.rejoin_round(40, []) == 40
    take = RoundPolicy.rejoin_from_checkpoint
    assert take("auto", 10, 5) and not take("auto", 11, 5)
    assert take("auto", 40, 20) and not take("auto", 41, 20)
    assert take("checkpoint", 1000, 5) and not take("average", 0, 5)


def test_goodbye_grace_defaults_to_the_ceiling() -> None:
    assert POLICY.grace == 8.0 and RoundPolicy(goodbye_grace=0.0).grace == 0.0


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"floor": 0.0}, "deadline_floor"), ({"floor": 5.0, "ceiling": 1.0}, "deadline_floor"),
    ({"factor": 0.5}, "deadline_factor"), ({"rounds_ahead": 1}, "rounds_ahead"), ({"window": 0}, "window"),
    ({"ping_every": math.nan}, "ping_every"), ({"goodbye_grace": -1.0}, "goodbye_grace"),
])
def test_bad_knobs_are_config_errors_naming_the_key(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        RoundPolicy(**kwargs)  # type: ignore[arg-type]
    assert err.value.key == key
