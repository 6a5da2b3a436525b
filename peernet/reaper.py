"""``python -m peernet.reaper [RECORD]``: end a dead launcher's processes and namespaces (see peernet.procs.Reaper).

Standard library only, so it starts in a few tens of milliseconds and works whatever state the launcher left.
Reads lines from stdin: ``pid PID START NAME``, ``netns NAME``, ``done``. At ``done`` it exits; at end of
file without ``done`` the launcher died without cleaning up, and it does that: SIGCONT and SIGTERM to every
process it was told of and every process inside the namespaces, SIGKILL after GRACE_S, then deletes the
namespaces (with them their veths, nftables tables and tc qdiscs), and writes what it did to RECORD.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from peernet.procs import start_time

#: How long a process gets to act on SIGTERM (a node writes its checkpoint) before SIGKILL.
GRACE_S = 5.0


def _read_orders() -> tuple[bool, dict[int, tuple[str, str]], list[str]]:
    """(done, {pid: (start time, name)}, namespaces) from stdin, until "done" or end of file."""
    procs: dict[int, tuple[str, str]] = {}
    namespaces: list[str] = []
    for raw in sys.stdin.buffer:
        parts = raw.decode(errors="replace").split()
        if parts == ["done"]:
            return True, procs, namespaces
        if len(parts) == 4 and parts[0] == "pid" and parts[1].isdigit():
            procs[int(parts[1])] = (parts[2], parts[3])
        elif len(parts) == 2 and parts[0] == "netns" and parts[1] not in namespaces:
            namespaces.append(parts[1])
    return False, procs, namespaces


def _netns_pids(namespace: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split() if p.isdigit()] if out.returncode == 0 else []


def _signal(pid: int, started: str, sig: int) -> bool:
    """Send ``sig`` if ``pid`` is still the process that started at ``started``; False if it is gone."""
    if start_time(pid) != started:
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def end_processes(procs: dict[int, tuple[str, str]], namespaces: list[str]) -> list[dict[str, Any]]:
    """SIGCONT + SIGTERM (a stopped process cannot act on SIGTERM), SIGKILL after GRACE_S; what was done."""
    targets = dict(procs)
    for ns in namespaces:  # everything inside the lab's namespaces was started by the launcher
        for pid in _netns_pids(ns):
            started = start_time(pid)
            if started is not None and pid not in targets:
                targets[pid] = (started, f"in {ns}")
    ended: list[dict[str, Any]] = []
    for pid, (started, name) in targets.items():
        _signal(pid, started, signal.SIGCONT)
        # "gone": it had exited already, e.g. on the parent-death signal the kernel sent with the launcher's end.
        how = "SIGTERM" if _signal(pid, started, signal.SIGTERM) else "gone"
        ended.append({"name": name, "pid": pid, "ended_by": how})
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(start_time(pid) == started for pid, (started, _) in targets.items()):
        time.sleep(0.05)
    for entry in ended:
        if _signal(entry["pid"], targets[entry["pid"]][0], signal.SIGKILL):
            entry["ended_by"] = "SIGKILL"
    return ended


def remove_namespaces(namespaces: list[str]) -> list[str]:
    removed = []
    for ns in reversed(namespaces):
        if subprocess.run(["ip", "netns", "del", ns], capture_output=True).returncode == 0:
            removed.append(ns)
    return removed


def main(argv: list[str]) -> int:
    # The launcher's clean stop may take seconds; a Ctrl-C or hang-up meant for it must not end us first.
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    done, procs, namespaces = _read_orders()
    if done:
        return 0
    ended = end_processes(procs, namespaces)
    removed = remove_namespaces(namespaces)
    if len(argv) > 1:
        record = {"cause": "launcher died", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "processes": ended,
                  "namespaces": removed}
        try:
            Path(argv[1]).write_text(json.dumps(record, indent=2) + "\n")
        except OSError as exc:
            print(f"peernet reaper: cannot write {argv[1]}: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
