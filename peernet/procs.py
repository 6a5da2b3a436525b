"""Child processes that end with their launcher: a parent-death signal, and a reaper for what a SIGKILL leaves."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("peernet.procs")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up here, in the parent: the child between fork and exec must only call it, not load anything.
_PRCTL = _load_prctl()


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive ``sig`` when the process starting it dies (even by SIGKILL).

    The setting survives ``exec`` (of ``ip netns exec`` and then of python: neither is set-user-ID), so it
    reaches the daemon itself. It follows the *thread* that forks: start children from a thread that lives as
    long as they should (the launchers use the main thread). If the parent died before the setting took
    effect, the child is an orphan already and exits at once.
    """
    parent = os.getpid()

    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(128 + int(sig))

    return preexec


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None if it is gone.

    A pid with its start time names one process for good: a pid reused by another process has another.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return None if fields[0] == "Z" else fields[19]


class Reaper:
    """A watchdog process (``python -m peernet.reaper``) that ends a launcher's processes and namespaces if the
    launcher dies without doing it itself: SIGKILL, the OOM killer, a crash of the interpreter.

    It reads what to clean up from a pipe; the launcher's death closes the pipe. After :meth:`close` (which
    says "done": the launcher cleaned up itself) it exits without doing anything. ``keep_fds`` are inherited
    by it, e.g. the run directory's lock, which then stays held until the reaper has finished.
    """

    def __init__(self, record: Path | None = None, keep_fds: Sequence[int] = ()) -> None:
        cmd = [sys.executable, "-m", "peernet.reaper", *([str(record)] if record is not None else [])]
        # Its own session: Ctrl-C and a hang-up reach the launcher's process group, not the reaper, which
        # must outlive the launcher's clean stop to see "done".
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     start_new_session=True, pass_fds=tuple(keep_fds))
        self.broken = False

    def _send(self, line: str) -> None:
        if self.broken or self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:  # the reaper was killed: the launcher still cleans up on its own
            log.warning("reaper gone (%s): a SIGKILL of this launcher would now leave its processes", exc)
            self.broken = True

    def watch(self, proc: subprocess.Popen[bytes], name: str) -> None:
        """End this process if the launcher dies (pid and start time, so a reused pid is never hit)."""
        started = start_time(proc.pid)
        if started is not None:
            self._send(f"pid {proc.pid} {started} {name}")

    def watch_netns(self, name: str) -> None:
        """Delete this namespace (and end whatever runs in it) if the launcher dies; say it before creating it."""
        self._send(f"netns {name}")

    def close(self, timeout: float = 10.0) -> None:
        """Everything was cleaned up by the launcher: let the reaper go."""
        self._send("done")
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
