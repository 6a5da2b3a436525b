"""Stop signals as one exception: raised once, held back through cleanup, the handlers restored afterwards."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from peernet.errors import Interrupted
from peernet.interrupts import STOP_SIGNALS, deferred_signals, stop_signals


@pytest.fixture(autouse=True)
def default_dispositions() -> Iterator[None]:
    """A test run in the background of a script has SIGINT ignored, which stop_signals rightly keeps."""
    saved = {sig: signal.signal(sig, signal.SIG_DFL) for sig in STOP_SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_each_stop_signal_raises_interrupted_and_the_handlers_are_restored() -> None:
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        with pytest.raises(Interrupted) as caught, stop_signals():
            os.kill(os.getpid(), sig)  # a signal to itself is handled before the next statement
        assert caught.value.signum == sig and caught.value.signame == sig.name
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before


def test_a_signal_during_cleanup_waits_for_it_and_a_second_one_is_ignored() -> None:
    done = []
    with pytest.raises(Interrupted) as caught, stop_signals():
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGHUP)
            done.append("cleanup finished")
        raise AssertionError("the held signal was not raised")
    assert done == ["cleanup finished"] and caught.value.signame == "SIGTERM"  # the first one held is raised
    with pytest.raises(Interrupted) as caught, stop_signals():
        try:
            os.kill(os.getpid(), signal.SIGINT)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # while the first unwinds: must not replace it
            done.append("unwound")
    assert caught.value.signame == "SIGINT" and done[-1] == "unwound"


def test_an_ignored_signal_stays_ignored() -> None:
    """nohup ignores SIGHUP so that the run outlives the terminal: the launcher must not undo that."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with stop_signals():
        os.kill(os.getpid(), signal.SIGHUP)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
