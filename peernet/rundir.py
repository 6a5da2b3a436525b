"""Run directories: one run at a time (a lock), never mixed with an old run's files, and what settings.json holds."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from peernet import __version__
from peernet.config import RunSettings
from peernet.errors import RunDirError, escaped
from peernet.interrupts import deferred_signals

LOCK_NAME = "run.lock"
SETTINGS_NAME = "settings.json"
STOPPED_NAME = "stopped.json"
#: What --force takes as the sign of a peernet run directory, the only kind it empties: never a home directory
#: or a source tree given as --out by mistake.
RUN_MARKERS = (LOCK_NAME, SETTINGS_NAME, STOPPED_NAME, "run.toml", "summary.json", "metrics.jsonl", "chaos.json",
               "nodes")
#: Settings that say where, not what: left out of the digest, so a run's settings.json, its run.toml (the
#: topology as a file) and a copy collected from hosts (another data directory) all give the same digest.
NOT_DIGESTED = ("data_dir", "topology", "nodes")
#: Settings added after summaries carried the digest: digested only when set, so earlier results stay current.
DIGESTED_WHEN_SET = ("clip_tau", "clip_tau_tracker")
#: The same for later keys whose default is not None: digested only when not at their default.
DIGESTED_UNLESS_DEFAULT = ("compression", "compression_ratio", "compression_rank", "consensus_step", "tracker_init",
                           "tracker_init_rounds")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunSettings)}


@dataclasses.dataclass
class RunDir:
    """A claimed run directory; ``fd`` holds its lock (hand it to a process that must keep the claim alive)."""

    path: Path
    fd: int


def _holder(lock: Path) -> str:
    """Who holds the lock, from what the holder wrote into it (best effort: it may be mid-write)."""
    try:
        info = json.loads(lock.read_text())
        return f" (pid {info['pid']} on {info['host']}, since {info['since']}: {escaped(str(info['command']), 120)})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _busy(path: Path) -> RunDirError:
    return RunDirError(f"{escaped(str(path))} is in use by another run{_holder(path / LOCK_NAME)}: wait for it to "
                       "end, or choose another --out")


def _contents(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.name != LOCK_NAME)


def _refuse_busy(path: Path) -> None:
    """Refuse, before writing anything, a directory whose lock another process holds."""
    lock = path / LOCK_NAME
    if lock.is_file():
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a probe: released at once by the close
            except BlockingIOError:
                raise _busy(path) from None
            finally:
                os.close(fd)


def _refuse_contents(path: Path, force: bool, resume: bool) -> None:
    """Refuse a directory with files (neither --force nor ``resume``), or one --force must not empty."""
    left = _contents(path)
    if resume:
        return
    if left and not force:
        shown = ", ".join(p.name for p in left[:5]) + (", ..." if len(left) > 5 else "")
        raise RunDirError(f"{escaped(str(path))} is not empty ({escaped(shown)}): an earlier run's files would mix "
                          "with this run's. Choose a new --out, or give --force to delete its contents first "
                          "(a stopped `peernet local` run continues with `peernet local --resume DIR`)")
    if left and not any((path / name).exists() for name in RUN_MARKERS):
        raise RunDirError(f"{escaped(str(path))} does not look like a peernet run directory (none of "
                          f"{', '.join(RUN_MARKERS)}): --force empties only those; choose another --out")


def _clear(path: Path) -> None:
    for p in _contents(path):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _take_lock(path: Path) -> int:
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _busy(path) from None
    return fd


@contextlib.contextmanager
def claim_run_dir(path: str | Path, *, force: bool = False, resume: bool = False) -> Iterator[RunDir]:
    """Own ``path`` for one run: refuse it if another run holds it or it has files (unless ``force``: then
    empty it, or ``resume``: keep them, for a command that continues what is there), lock it before anything
    is written, and keep the lock (``run.lock``, an flock the kernel drops when the holder dies) until the
    block ends.

    A block that fails before it wrote anything leaves the directory as it was (a new one is removed again).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{escaped(str(path))} exists and is not a directory")
    existed = path.is_dir()
    if force and resume:
        raise RunDirError("--force empties the directory that resuming would continue: give one of them")
    if existed:  # before writing anything, even the lock file
        _refuse_busy(path)
        _refuse_contents(path, force, resume)
    path.mkdir(parents=True, exist_ok=True)
    fd = _take_lock(path)
    try:
        _refuse_contents(path, force, resume)  # again under the lock: a run that started meanwhile has written
        if force:
            with deferred_signals():  # half an emptied directory is worse than either
                _clear(path)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield RunDir(path, fd)
    except BaseException:
        if not _contents(path):  # nothing of the run was written: leave no trace of it
            with contextlib.suppress(OSError):
                (path / LOCK_NAME).unlink()
                if not existed:
                    path.rmdir()
        raise
    finally:
        os.close(fd)


def git_commit() -> str | None:
    """The commit of the source tree peernet runs from, read from its .git (no git process); None if there is none."""
    root = Path(__file__).resolve().parents[1]
    git = root / ".git"
    try:
        if git.is_file():  # a worktree or submodule: "gitdir: PATH"
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head or None  # detached
        ref = head.split(":", 1)[1].strip()
        common = git / "commondir"
        base = (git / common.read_text().strip()).resolve() if common.is_file() else git
        for d in (git, base):
            if (d / ref).is_file():
                return (d / ref).read_text().strip() or None
        for line in (base / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except (OSError, IndexError):
        return None
    return None


def resolved_settings(settings: RunSettings) -> dict[str, Any]:
    """The settings as the run uses them: the step size and dtype that a None stands for, filled in."""
    return dataclasses.asdict(settings) | {"lr": settings.step_size, "dtype": settings.param_dtype}


def settings_digest(settings: RunSettings) -> str:
    """Hash of what the run computes (resolved settings except NOT_DIGESTED); summaries and settings.json
    both carry it, so a summary left by another run is told apart from this run's."""
    data = {k: v for k, v in resolved_settings(settings).items()
            if k not in NOT_DIGESTED and not (k in DIGESTED_WHEN_SET and v is None)
            and not (k in DIGESTED_UNLESS_DEFAULT and v == _DEFAULTS[k])}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def run_record(settings: RunSettings, nodes: int | None = None) -> dict[str, Any]:
    """settings.json: the resolved settings (``nodes``: the topology's real size), peernet's version, the git
    commit when peernet runs from a checkout, and the digest that summary.json repeats."""
    record = resolved_settings(settings)
    if nodes is not None:
        record["nodes"] = nodes
    return record | {"peernet_version": __version__, "git_commit": git_commit(),
                     "settings_digest": settings_digest(settings)}


def write_stopped(run_dir: Path, record: dict[str, Any]) -> str:
    """Write stopped.json (what a signal-stopped run had done and how its processes ended); a one-line account."""
    (run_dir / STOPPED_NAME).write_text(json.dumps(record, indent=2) + "\n")
    procs = record.get("processes", [])
    spaces = record.get("namespaces", [])
    how = f"ended {len(procs)} process{'es' if len(procs) != 1 else ''}"
    if spaces:
        how += f", removed {len(spaces)} network namespaces"
    return f"{how}; see {run_dir / STOPPED_NAME}"
