"""The raw-pyzmq ceiling: the fastest one-way configuration a search over ZeroMQ's settings finds on this host."""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import zmq

from bench.child import answer, reap, report

MiB = 1 << 20
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Knobs:
    """One configuration of a raw DEALER -> ROUTER pair (the pattern peernet uses), all ZeroMQ can vary."""

    proto: str = "tcp"          # "tcp" (loopback) or "ipc" (a Unix socket)
    frame: int = MiB            # bytes per frame of the one multipart message carrying the tensor
    recv: str = "into"          # "into": recv_into preallocated memory; "frames": zero-copy frames, then a copy
    sockbuf: int = 0            # SO_SNDBUF / SO_RCVBUF in bytes; 0 = the kernel's default (autotuned)
    io_threads: int = 1         # libzmq I/O threads per context, both ends
    send_copy: bool = False     # the sender lets pyzmq copy each frame (True) or hands over its memory (False)

    def label(self) -> str:
        return (f"{self.proto}, {self.frame // 1024} KiB frames, recv {self.recv}, "
                f"sockbuf {self.sockbuf // MiB if self.sockbuf else 'default'}{' MiB' if self.sockbuf else ''}, "
                f"{self.io_threads} io thread{'s' if self.io_threads > 1 else ''}, "
                f"send {'copy' if self.send_copy else 'zero-copy'}")


#: What the search tries, one setting at a time from the current best (coordinate search).
SPACE: dict[str, list[Any]] = {
    "proto": ["tcp", "ipc"],
    "frame": [256 * 1024, MiB, 4 * MiB],
    "recv": ["into", "frames"],
    "sockbuf": [0, 8 * MiB],
    "io_threads": [1, 2],
    "send_copy": [False, True],
}


@dataclass(frozen=True)
class Job:
    """One measured configuration: ``warmup`` untimed messages, then ``trials`` timed batches of ``repeats``."""

    knobs: Knobs
    size: int
    warmup: int
    trials: int
    repeats: int
    window: int = 2

    @property
    def count(self) -> int:
        return self.warmup + self.trials * self.repeats


def _pattern(size: int) -> np.ndarray:
    return np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)


def _digest(buf: np.ndarray) -> str:
    return hashlib.blake2b(buf.data, digest_size=16).hexdigest()


def _context(knobs: Knobs) -> zmq.Context:
    return zmq.Context(io_threads=knobs.io_threads)


def _configure(sock: zmq.Socket, knobs: Knobs) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 4)
    sock.setsockopt(zmq.RCVHWM, 4)
    if knobs.sockbuf:
        sock.setsockopt(zmq.SNDBUF, knobs.sockbuf)
        sock.setsockopt(zmq.RCVBUF, knobs.sockbuf)


# ---- receiver (one spawned process serves every job of a list) ---------------------------------------------


def _receive(job: Job, conn: Connection, ipc_dir: str) -> str:
    knobs = job.knobs
    ctx = _context(knobs)
    try:
        router = ctx.socket(zmq.ROUTER)
        _configure(router, knobs)
        router.bind(f"ipc://{ipc_dir}/rx.sock" if knobs.proto == "ipc" else "tcp://127.0.0.1:*")
        conn.send(router.getsockopt_string(zmq.LAST_ENDPOINT))
        dest = np.zeros(job.size, dtype=np.uint8)
        whole = dest.data
        views = [whole[o : o + knobs.frame] for o in range(0, job.size, knobs.frame)]
        header = bytearray(64)
        for _ in range(job.count):
            if not router.poll(int(TIMEOUT_S * 1000)):
                raise TimeoutError("ceiling receiver: no message")
            if knobs.recv == "into":
                peer = router.recv()
                router.recv_into(header)
                for view in views:
                    router.recv_into(view)
            else:
                parts = router.recv_multipart(copy=False)
                peer, offset = parts[0].bytes, 0
                for part in parts[2:]:
                    chunk = np.frombuffer(part.buffer, dtype=np.uint8)
                    dest[offset : offset + chunk.size] = chunk
                    offset += chunk.size
            router.send_multipart([peer, b"a"])
        return _digest(dest)
    finally:
        ctx.destroy(linger=0)


def _receive_all(conn: Connection, jobs: list[Job]) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="peernet-ceiling-") as ipc_dir:
        return [_receive(job, conn, ipc_dir) for job in jobs]


def _receiver_main(conn: Connection, jobs: list[Job]) -> None:
    report(conn, lambda: _receive_all(conn, jobs))


# ---- sender (this process) -----------------------------------------------------------------------------------


def _answer(conn: Connection) -> Any:
    return answer(conn, TIMEOUT_S, "the ceiling receiver")


def _send(job: Job, conn: Connection) -> list[float]:
    knobs = job.knobs
    ctx = _context(knobs)
    try:
        dealer = ctx.socket(zmq.DEALER)
        _configure(dealer, knobs)
        dealer.connect(_answer(conn))
        src = _pattern(job.size).data
        frames = [b"h", *(src[o : o + knobs.frame] for o in range(0, job.size, knobs.frame))]

        def batch(n: int) -> None:
            sent = acked = 0
            while acked < n:
                if sent < n and sent - acked < job.window:
                    dealer.send_multipart(frames, copy=knobs.send_copy)
                    sent += 1
                else:
                    if not dealer.poll(int(TIMEOUT_S * 1000)):
                        raise TimeoutError("ceiling sender: no ack")
                    dealer.recv()
                    acked += 1

        batch(job.warmup)
        seconds = []
        for _ in range(job.trials):
            start = time.perf_counter()
            batch(job.repeats)
            seconds.append(time.perf_counter() - start)
        return seconds
    finally:
        ctx.destroy(linger=0)


def run_jobs(jobs: list[Job]) -> list[list[float]]:
    """Seconds of each timed trial of each job, against one spawned receiver; every tensor checked by digest."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_receiver_main, args=(child, jobs), daemon=True)
    proc.start()
    try:
        child.close()
        seconds = [_send(job, parent) for job in jobs]
        _, digests = _answer(parent)
        for job, digest in zip(jobs, digests, strict=True):
            if digest != _digest(_pattern(job.size)):
                raise RuntimeError(f"ceiling ({job.knobs.label()}): the tensor received differs from the one sent")
        return seconds
    finally:
        parent.close()
        reap(proc)


def _rate(job: Job, seconds: list[float]) -> float:
    return job.repeats * job.size / statistics.median(seconds) / 1e9


def search(size: int, *, trials: int = 3, repeats: int = 5, log: Callable[[str], None] = lambda s: None
           ) -> tuple[Knobs, list[dict[str, Any]]]:
    """Coordinate search: from the defaults, try each setting's alternatives with the others at their best so
    far, keep whatever is faster, two passes. Returns the best Knobs and every (knobs, GB/s) tried."""
    best = Knobs()
    tried: dict[Knobs, float] = {}

    def measure(candidates: list[Knobs]) -> None:
        todo = [k for k in candidates if k not in tried]
        jobs = [Job(k, size, warmup=2, trials=trials, repeats=repeats) for k in todo]
        for job, secs in zip(jobs, run_jobs(jobs), strict=True):
            tried[job.knobs] = _rate(job, secs)
            log(f"  {size // 1_000_000} MB, {job.knobs.label()}: {tried[job.knobs]:.2f} GB/s")

    for _ in range(2):
        for name, values in SPACE.items():
            candidates = [dataclasses.replace(best, **{name: v}) for v in values]
            measure(candidates)
            best = max(candidates, key=lambda k: tried[k])
    history = [dict(dataclasses.asdict(k), gbps=r) for k, r in sorted(tried.items(), key=lambda kv: -kv[1])]
    return best, history


def available() -> bool:
    """ipc needs Unix sockets; every Linux has them, but say so rather than fail elsewhere."""
    return os.name == "posix"
