"""SIGTERM, SIGHUP and SIGINT as one clean stop path for the launchers: an Interrupted exception, raised once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from peernet.errors import Interrupted

#: `kill PID`, a closed terminal or ssh session, Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class _State:
    """Module state shared by the handler and the cleanup sections (signals only reach the main thread)."""

    raised = False          # an Interrupted is on its way up: later signals must not cut the cleanup short
    deferring = 0           # depth of deferred_signals() sections
    pending: int | None = None


_state = _State()


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.raised:
        return  # a second Ctrl-C (or the SIGHUP after a SIGTERM) while stopping: the stop is already under way
    if _state.deferring:
        if _state.pending is None:  # the first one is what stopped the run
            _state.pending = signum
        return
    _state.raised = True
    raise Interrupted(signum)


@contextmanager
def stop_signals() -> Iterator[None]:
    """Within this block the three stop signals raise :class:`Interrupted` (once), then are restored.

    Without it SIGTERM and SIGHUP end a launcher at once and its children live on; with it they take the
    same path as Ctrl-C: every ``finally`` runs. A signal ignored when the block starts stays ignored:
    ``nohup`` ignores SIGHUP so that a run outlives its terminal, and a shell script's background job
    ignores SIGINT. Only the main thread can install handlers: elsewhere (an embedding program's worker
    thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handler) for sig in STOP_SIGNALS
                if signal.getsignal(sig) is not signal.SIG_IGN}
    _state.raised, _state.pending = False, None
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        _state.raised, _state.pending = False, None


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold a stop signal back while a cleanup or a start runs to its end, then raise it.

    Used around what must not be cut in half: ending processes, deleting namespaces, starting a process and
    registering it with the reaper. A signal that arrives inside is raised when the outermost section ends
    without an exception of its own; with one, that exception goes on and the signal is dropped.
    """
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    if not _state.deferring and _state.pending is not None and not _state.raised:
        signum, _state.pending = _state.pending, None
        _state.raised = True
        raise Interrupted(signum)
