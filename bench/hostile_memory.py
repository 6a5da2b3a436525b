"""A victim's memory under hostile multipart messages: peak and retained RSS, the next honest message, counters."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import zmq

from bench.child import answer, reap, report

MB = 1_000_000
MiB = 1 << 20
TIMEOUT_S = 180.0
#: The node victim's bound: a LeNet-GN round of Momentum Tracking (x and d, 44,470 float32 each), as a daemon
#: computes MAXMSGSIZE from it (2 × payload + 1 MiB).
LENET_PAYLOAD = 2 * 44_470 * 4
#: Allocator settings the victim starts with: glibc's own; "+trim": peernet.transport.trim's malloc_trim after a hostile
#: message (as `peernet bootstrap` runs); "reuse-32MiB": the node's tuning for round speed (peernet.node.allocator,
#: mmap threshold 32 MiB; with "+trim", as `peernet node` runs); "mmap-128KiB": the mmap threshold fixed at glibc's
#: initial 128 KiB instead, measured for comparison.
NODE_ALLOCATORS = ("glibc", "glibc+trim", "reuse-32MiB", "reuse-32MiB+trim", "mmap-128KiB")
BOOTSTRAP_ALLOCATORS = ("glibc", "glibc+trim", "mmap-128KiB")
_M_MMAP_THRESHOLD = -3  # malloc.h


@dataclass(frozen=True)
class Attack:
    """One hostile message per connection: ``frames`` frames of ``frame_bytes`` after a 1-byte first frame."""

    name: str
    frames: int
    frame_bytes: int
    connections: int


def attacks(max_frame: int, total: int) -> list[Attack]:
    """The three of docs/security.md, and frames just below glibc's initial mmap threshold (128 KiB)."""
    big, small = max_frame - 64, 120 << 10
    return [Attack("1,000,000 one-byte frames", 1_000_000, 1, 1),
            Attack(f"{total / 1e9:g} GB in frames of {big:,} B", total // big, big, 1),
            Attack("the same from 4 connections", total // big, big, 4),
            Attack(f"{total / 1e9:g} GB in frames of {small:,} B", total // small, small, 1)]


def _status(field: str) -> float:
    """A field of this process's /proc/self/status in MB (10^6 bytes)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / MB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _set_allocator(mode: str) -> None:
    from peernet.node.allocator import reuse_freed_memory
    from peernet.transport.trim import trim_after_hostile_messages

    if mode.startswith("reuse-32MiB"):
        reuse_freed_memory()
    if mode.endswith("+trim"):
        trim_after_hostile_messages()
    if mode == "mmap-128KiB":
        ctypes.CDLL(ctypes.util.find_library("c")).mallopt(_M_MMAP_THRESHOLD, 128 << 10)


def _trimmed() -> bool:
    """No trim pending (peernet.transport.trim): what the victim's loop owes after the attack is done."""
    from peernet.transport.trim import TRIMMER

    return not TRIMMER.pending


def _malloc_trim() -> None:
    """glibc's malloc_trim(0): what a trim after each hostile message would give back (a comparison only)."""
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def _memory(before: float) -> dict[str, float]:
    """Peak (the kernel's VmHWM) and resident memory now, each also above ``before``; then after a trim."""
    rss, peak = _status("VmRSS"), _status("VmHWM")
    _malloc_trim()
    return {"base_mb": before, "peak_mb": peak, "rss_mb": rss, "peak_over_mb": peak - before,
            "retained_mb": rss - before, "retained_after_trim_mb": _status("VmRSS") - before}


def _node_victim(conn: Connection, allocator: str, max_msg_size: int) -> dict[str, Any]:
    """A ZmqTransport that calls recv in a loop, as a node does, until the attack was drained and the honest
    message arrived; then its memory and counters."""
    _set_allocator(allocator)
    from peernet.transport import ZmqTransport

    with ZmqTransport(1, max_msg_size=max_msg_size) as rx:
        conn.send(rx.endpoint)
        deadline = time.monotonic() + 30
        while rx.recv(0.05) is None:  # the warm-up message: connections and buffers exist before the baseline
            if time.monotonic() > deadline:
                raise TimeoutError("no warm-up message")
        expect = conn.recv()
        before = _status("VmRSS")
        conn.send("go")
        honest_at = drained_at = None
        deadline = time.monotonic() + TIMEOUT_S
        while (honest_at is None or drained_at is None) and time.monotonic() < deadline:
            got = rx.recv(0.05)
            if got is not None and bytes(got[1][0]) == b"honest":
                honest_at = time.monotonic()
            if drained_at is None and rx.stats["oversize"] >= expect:
                drained_at = time.monotonic()
        for _ in range(3):  # a few idle receives: libzmq frees what it still held
            rx.recv(0.05)
        while not _trimmed() and time.monotonic() < deadline:  # the last trim comes a second after the one before
            rx.recv(0.05)
        return {**_memory(before), "honest_at": honest_at, "drained_at": drained_at, "stats": dict(rx.stats)}


def _bootstrap_victim(conn: Connection, allocator: str, directory: str) -> dict[str, Any]:
    """A BootstrapService serving from its thread; reports when the bad requests were all counted."""
    _set_allocator(allocator)
    from peernet.bootstrap.config import load_bootstrap_config
    from peernet.bootstrap.service import BootstrapService

    with BootstrapService(load_bootstrap_config(_bootstrap_files(Path(directory)))) as svc:
        svc.start_in_thread()
        conn.send(svc.endpoint)
        expect = conn.recv()
        before = _status("VmRSS")
        conn.send("go")
        drained_at = None
        deadline = time.monotonic() + TIMEOUT_S
        while drained_at is None and time.monotonic() < deadline:
            if svc.counters["bad_requests"] >= expect:
                drained_at = time.monotonic()
            time.sleep(0.01)  # polling another thread's counter, not synchronising with it
        conn.recv()  # the parent's honest request was answered
        while not _trimmed() and time.monotonic() < deadline:
            time.sleep(0.05)  # the serving thread trims; this one only watches
        return {**_memory(before), "drained_at": drained_at, "honest_at": None, "stats": dict(svc.counters)}


def _bootstrap_files(directory: Path) -> Path:
    """bootstrap.toml for a 3-node ring of the quadratic task, on a free loopback port."""
    from peernet.core.topology import generate
    from peernet.topology_files import save_topology

    save_topology(generate("ring", 3), directory / "topology.toml")
    (directory / "run.toml").write_text('dataset = "quadratic"\ntopology = "topology.toml"\nrounds = 10\n')
    path = directory / "bootstrap.toml"
    path.write_text('listen = "tcp://127.0.0.1:0"\nrun = "run.toml"\nstate_dir = "state"\n')
    return path


def _child(conn: Connection, kind: str, allocator: str, arg: Any) -> None:
    work: Callable[[], Any] = ((lambda: _node_victim(conn, allocator, arg)) if kind == "node"
                               else (lambda: _bootstrap_victim(conn, allocator, arg)))
    report(conn, work)


def _send_attack(ctx: zmq.Context, endpoint: str, attack: Attack) -> list[zmq.Socket]:
    """The attacker's own code: raw DEALERs claiming node 0 that each queue one hostile message."""
    payload = memoryview(bytes(attack.frame_bytes))
    socks = []
    for i in range(attack.connections):
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = 0
        sock.routing_id = f"0.{i:016x}".encode()
        sock.connect(endpoint)
        socks.append(sock)
    for sock in socks:
        if attack.frame_bytes == 1:
            sock.send_multipart([b"h", *([b"x"] * attack.frames)], copy=True)
        else:  # one buffer sent over and over without copies: the attacker needs no gigabyte of its own
            sock.send_multipart([b"h", *([payload] * attack.frames)], copy=False)
    return socks


def _honest_node(endpoint: str) -> Any:
    from peernet.transport import ZmqTransport

    tx = ZmqTransport(0)
    tx.connect(1, endpoint)
    deadline = time.monotonic() + 10
    while not tx.send(1, [b"warm-up"]):
        if time.monotonic() > deadline:
            raise TimeoutError("victim never connected")
        time.sleep(0.01)
    return tx


def trial(kind: str, allocator: str, attack: Attack, max_msg_size: int) -> dict[str, Any]:
    mp_ctx = mp.get_context("spawn")
    parent, child = mp_ctx.Pipe()
    with tempfile.TemporaryDirectory() as tmp:
        arg: Any = max_msg_size if kind == "node" else tmp
        proc = mp_ctx.Process(target=_child, args=(child, kind, allocator, arg), daemon=True)
        proc.start()
        ctx = zmq.Context()
        socks: list[zmq.Socket] = []
        try:
            endpoint = answer(parent, 60, "the victim")
            return _attack_victim(parent, ctx, socks, kind, endpoint, attack)
        finally:
            for sock in socks:
                sock.close(linger=0)
            ctx.term()
            parent.close()
            reap(proc)


def _attack_victim(parent: Connection, ctx: zmq.Context, socks: list[zmq.Socket], kind: str, endpoint: str,
                   attack: Attack) -> dict[str, Any]:
    from peernet.bootstrap.client import BootstrapClient

    honest: Any = _honest_node(endpoint) if kind == "node" else BootstrapClient(endpoint, timeout=60.0, retries=1)
    try:
        if kind == "bootstrap":
            honest.status()  # warm-up
        parent.send(attack.connections)
        answer(parent, 60, "the victim")
        start = time.monotonic()
        socks += _send_attack(ctx, endpoint, attack)
        sent = time.monotonic()
        if kind == "node":
            if not honest.send(1, [b"honest"]):
                raise RuntimeError("the honest message could not even be queued")
        else:
            honest.status()
            answered = time.monotonic()
            parent.send("answered")
        _, res = answer(parent, TIMEOUT_S + 30, "the victim")  # report() sends ("ok", result)
    finally:
        honest.close()
    honest_at = res.pop("honest_at") if kind == "node" else answered
    drained = res.pop("drained_at")
    return {**res, "honest_s": None if honest_at is None else honest_at - sent,
            "drained_s": None if drained is None else drained - start}


def _spread(values: Sequence[float | None]) -> dict[str, float | None]:
    got = [v for v in values if v is not None]
    if not got:
        return {"min": None, "median": None, "max": None, "missing": len(values)}
    return {"min": min(got), "median": statistics.median(got), "max": max(got), "missing": len(values) - len(got)}


def measure(kind: str, allocator: str, attack: Attack, max_msg_size: int, repeats: int) -> dict[str, Any]:
    runs = [trial(kind, allocator, attack, max_msg_size) for _ in range(repeats)]
    keys = ("peak_mb", "peak_over_mb", "retained_mb", "retained_after_trim_mb", "base_mb", "honest_s", "drained_s")
    return {"victim": kind, "allocator": allocator, "attack": attack.name, "connections": attack.connections,
            "frames": attack.frames, "frame_bytes": attack.frame_bytes, "repeats": repeats,
            **{k: _spread([r[k] for r in runs]) for k in keys},
            "honest_arrived": sum(r["honest_s"] is not None for r in runs), "stats": runs[-1]["stats"]}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.hostile_memory", description=__doc__)
    p.add_argument("--total-mb", type=int, default=1000, help="size of each big hostile message")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--victims", default="node,bootstrap")
    p.add_argument("--allocators", default="", help="comma-separated subset (default: all for each victim)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from peernet.bootstrap.service import MAX_REQUEST_BYTES

    node_max = 2 * LENET_PAYLOAD + MiB
    rows = []
    for kind in args.victims.split(","):
        max_frame = node_max if kind == "node" else MAX_REQUEST_BYTES
        modes = NODE_ALLOCATORS if kind == "node" else BOOTSTRAP_ALLOCATORS
        for allocator in [a for a in modes if not args.allocators or a in args.allocators.split(",")]:
            for attack in attacks(max_frame, args.total_mb * MB):
                rows.append(measure(kind, allocator, attack, node_max, args.repeats))
                if not args.json:
                    print(_line(rows[-1]), flush=True)
    if args.json:
        print(json.dumps({"node_max_msg_size": node_max, "bootstrap_max_msg_size": MAX_REQUEST_BYTES,
                          "total_mb": args.total_mb, "results": rows}, indent=2))


def _cell(spread: dict[str, float | None], digits: int = 0) -> str:
    """median (min–max), or – when no trial gave a figure."""
    if spread["median"] is None:
        return "–"
    def fmt(v: float | None) -> str:
        return str(round(v or 0.0)) if digits == 0 else f"{v or 0.0:.{digits}f}"  # never "-0"

    return f"{fmt(spread['median'])} ({fmt(spread['min'])}–{fmt(spread['max'])})"


def render(h: dict[str, Any]) -> list[str]:
    """The docs/performance.md section (bench.run)."""
    reps = {r["repeats"] for r in h["results"]}
    lines = ["", "## Hostile messages: the victim's memory (`python -m bench.hostile_memory`)", "",
             f"Measured {h.get('date', '?')}. A victim process — a node's `ZmqTransport` (MAXMSGSIZE "
             f"{h['node_max_msg_size']:,} B, a LeNet-GN round of Momentum Tracking) calling `recv` in a loop, or a "
             f"`BootstrapService` (MAXMSGSIZE {h['bootstrap_max_msg_size']:,} B) — gets one hostile message per "
             "connection from raw pyzmq DEALERs (plain TCP on loopback, no CURVE), then one honest message (a "
             "`ZmqTransport`'s, or a status request). Peak: the victim's VmHWM; retained: its VmRSS after the "
             "attack was drained (and, with '+trim', trimmed), less before it; both in MB (10⁶ B). 'after trim': "
             "after one more `malloc_trim(0)` by the bench, what any trim could still give back. Allocators: "
             "`glibc` as it starts; `+trim`: `peernet.transport.trim`'s `malloc_trim(0)` once hostile messages stopped "
             "for 1 s; `reuse-32MiB`: `peernet.node.allocator` (mmap threshold 32 MiB, for round speed); "
             "`mmap-128KiB`: the mmap threshold fixed at 128 KiB (`mallopt`), for comparison. `peernet node` runs "
             "`reuse-32MiB+trim`, `peernet bootstrap` `glibc+trim`. Median (min–max) of "
             f"{'/'.join(map(str, reps))} fresh victims each; 'honest s' is seconds from the honest send (right "
             "after the hostile messages were queued) to its arrival, on a shared 2-core machine (a timing: it "
             "moves with the load).", "",
             "| victim | allocator | hostile message(s) | peak MB | retained MB | after trim MB | honest arrived "
             "| honest s | counted |", "|---|---|---|---|---|---|---|---|---|"]
    for r in h["results"]:
        stats = r["stats"]
        count = (f"oversize {stats.get('oversize')}" if r["victim"] == "node"
                 else f"bad_requests {stats.get('bad_requests')}")
        lines.append(f"| {r['victim']} | {r['allocator']} | {r['attack']} | {_cell(r['peak_mb'])} | "
                     f"{_cell(r['retained_mb'])} | {_cell(r['retained_after_trim_mb'])} | "
                     f"{r['honest_arrived']}/{r['repeats']} | {_cell(r['honest_s'], 3)} | {count} |")
    return lines


def _line(r: dict[str, Any]) -> str:
    def f(key: str) -> str:
        s = r[key]
        return "–" if s["median"] is None else f"{s['median']:.0f} ({s['min']:.0f}–{s['max']:.0f})"

    return (f"{r['victim']:<9} {r['allocator']:<12} {r['attack']:<40} peak {f('peak_mb')} MB, retained "
            f"{f('retained_mb')} MB, after trim {f('retained_after_trim_mb')} MB, honest "
            f"{r['honest_arrived']}/{r['repeats']} (median {r['honest_s']['median']}), stats {r['stats']}")


if __name__ == "__main__":
    main()
