"""Giving the memory of a dropped hostile message back to the system (glibc's malloc_trim), in daemon processes."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: A trim waits until no hostile message came for this many seconds: a flood of them is not a flood of trims, and
#: what libzmq and the receiving code were still letting go of right after a message is free by then.
QUIET_S = 1.0


def _libc() -> ctypes.CDLL | None:
    """glibc, or None for any other C library (musl, macOS), whose allocators do not keep memory this way."""
    try:
        os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None


class _Trimmer:
    """Process-wide: off until a daemon's entry point turns it on, so library code and tests change nothing.

    glibc keeps what a multipart message's frames occupied after they are freed: libzmq's queue of a million
    tiny frames (65 MB), and frames below the mmap threshold, which peernet.node.allocator raises to 32 MiB for
    round speed (936 MB of a 1 GB message). ``malloc_trim(0)`` hands every free page of every arena back
    (docs/security.md, "Allocator high-water"); it costs a walk of the heap, so it runs only once hostile
    messages stopped coming for ``QUIET_S`` seconds.
    """

    def __init__(self) -> None:
        self.libc: ctypes.CDLL | None = None
        self.clock: Callable[[], float] = time.monotonic
        self.pending = False
        self.last_drop = float("-inf")
        self.trims = 0

    def dropped(self) -> None:
        """A large or many-framed message was just thrown away: trim once they stop coming."""
        if self.libc is not None:
            self.pending = True
            self.last_drop = self.clock()

    def due(self) -> None:
        """Trim now if a drop is pending and none came for ``QUIET_S``; cheap otherwise (called on every receive)."""
        if not self.pending or self.libc is None or self.clock() - self.last_drop < QUIET_S:
            return
        since = self.last_drop
        self.libc.malloc_trim(0)
        self.trims += 1
        # Done only now (a bench watching ``pending`` from another thread must not read memory mid-trim), and not
        # if another drop came meanwhile.
        self.pending = self.last_drop != since


TRIMMER = _Trimmer()


def trim_after_hostile_messages(clock: Callable[[], float] = time.monotonic) -> bool:
    """Turn the trimming on for this process (idempotent): once, from a daemon's process entry point, never
    from library code. False where the C library is not glibc (nothing to do there)."""
    libc = _libc()
    if libc is None:
        log.debug("not glibc: no malloc_trim after hostile messages")
        return False
    TRIMMER.libc, TRIMMER.clock = libc, clock
    return True


def hostile_message_dropped() -> None:
    """Called where a message over the size or frame bound was read and thrown away (transport, bootstrap)."""
    TRIMMER.dropped()


def trim_if_due() -> None:
    """Called from the receiving loops; trims after a hostile message (see ``_Trimmer``)."""
    TRIMMER.due()
