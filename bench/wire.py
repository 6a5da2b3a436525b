"""One-way tensor throughput between two processes on loopback: peernet transport vs raw pyzmq vs gloo."""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any

import torch
import torch.distributed as dist
import zmq

from peernet.transport import ZmqTransport

MB = 1_000_000  # sizes are decimal megabytes, rates decimal GB/s (10**9 bytes per second)
MiB = 1 << 20
RECV_TIMEOUT_S = 30.0
METHODS = ("peernet", "pyzmq", "gloo")
LABELS = {
    "peernet": "peernet ZmqTransport, {chunk} chunk frames, copy=False",
    "pyzmq": "raw pyzmq PUSH/PULL, 1 frame, default copy",
    "gloo": "torch.distributed gloo send/recv",
}


class Plan:
    """What both processes agree on before the first byte moves; picklable for the spawned receiver."""

    def __init__(self, sizes_mb: Sequence[int], warmup: int, trials: int, repeats: int, window: int, chunk: int):
        self.sizes = [s * MB for s in sizes_mb]
        self.warmup, self.trials, self.repeats, self.window, self.chunk = warmup, trials, repeats, window, chunk

    def per_size(self) -> int:
        return self.warmup + self.trials * self.repeats


def _destination(nbytes: int) -> tuple[torch.Tensor, memoryview]:
    t = torch.zeros(nbytes // 4, dtype=torch.float32)
    return t, t.numpy().data.cast("B")


def _digest(view: memoryview) -> str:
    return hashlib.blake2b(view, digest_size=16).hexdigest()


def _windowed(count: int, window: int, send: Callable[[], bool], wait_ack: Callable[[], None]) -> None:
    """Keep up to ``window`` messages unacknowledged; the receiver acks each one after copying it out."""
    sent = acked = 0
    while acked < count:
        while sent < count and sent - acked < window and send():
            sent += 1
        wait_ack()
        acked += 1


# ---- receiver side (spawned process) -------------------------------------------------------------------------


def _recv_peernet(conn: Connection, plan: Plan) -> dict[int, str]:
    with ZmqTransport(1) as rx:
        conn.send(rx.endpoint)
        rx.connect(0, conn.recv())
        digests = {}
        for size in plan.sizes:
            _, dest = _destination(size)
            for _ in range(plan.per_size()):
                got = rx.recv(RECV_TIMEOUT_S)
                if got is None:
                    raise TimeoutError("peernet receiver: no message")
                offset = 0
                for frame in got[1][1:]:  # frame 0 is the header
                    dest[offset : offset + frame.nbytes] = frame
                    offset += frame.nbytes
                while not rx.send(0, [got[1][0]]):
                    time.sleep(0.0001)
            digests[size] = _digest(dest)
        return digests


def _recv_pyzmq(conn: Connection, plan: Plan) -> dict[int, str]:
    ctx = zmq.Context()
    pull, ack = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    try:
        for s in (pull, ack):
            s.linger = 0
        pull.bind("tcp://127.0.0.1:*")
        conn.send(pull.getsockopt_string(zmq.LAST_ENDPOINT))
        ack.connect(conn.recv())
        digests = {}
        for size in plan.sizes:
            _, dest = _destination(size)
            for _ in range(plan.per_size()):
                if not pull.poll(int(RECV_TIMEOUT_S * 1000)):
                    raise TimeoutError("pyzmq receiver: no message")
                dest[:] = pull.recv()  # fresh bytes object each time, as default pyzmq code gets it
                ack.send(b"a")
            digests[size] = _digest(dest)
        return digests
    finally:
        pull.close(linger=0)
        ack.close(linger=0)
        ctx.term()


def _recv_gloo(conn: Connection, plan: Plan) -> dict[int, str]:
    dist.init_process_group(
        "gloo", init_method=conn.recv(), world_size=2, rank=1, timeout=timedelta(seconds=RECV_TIMEOUT_S)
    )
    try:
        digests = {}
        done = torch.zeros(1)
        for size in plan.sizes:
            tensor, dest = _destination(size)
            for batch in [plan.warmup] + [plan.repeats] * plan.trials:
                for _ in range(batch):
                    dist.recv(tensor, src=0)
                dist.send(done, dst=0)
            digests[size] = _digest(dest)
        return digests
    finally:
        dist.destroy_process_group()


def _receiver_main(method: str, conn: Connection, plan: Plan) -> None:
    try:
        fn = {"peernet": _recv_peernet, "pyzmq": _recv_pyzmq, "gloo": _recv_gloo}[method]
        conn.send(("ok", fn(conn, plan)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


# ---- sender side (this process) -------------------------------------------------------------------------------


def _source(size: int) -> tuple[torch.Tensor, memoryview]:
    t = torch.randn(size // 4, generator=torch.Generator().manual_seed(size))
    return t, t.numpy().data.cast("B")


def _time_batches(plan: Plan, run: Callable[[int], None]) -> list[float]:
    """Warm up, then time ``trials`` batches of ``repeats`` messages; returns the seconds of each trial."""
    run(plan.warmup)
    seconds = []
    for _ in range(plan.trials):
        start = time.perf_counter()
        run(plan.repeats)
        seconds.append(time.perf_counter() - start)
    return seconds


def _send_peernet(conn: Connection, plan: Plan) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    with ZmqTransport(0) as tx:
        tx.connect(1, conn.recv())
        conn.send(tx.endpoint)
        for size in plan.sizes:
            _, src = _source(size)
            frames = [b"d", *(src[i : i + plan.chunk] for i in range(0, size, plan.chunk))]

            def ack() -> None:
                if tx.recv(RECV_TIMEOUT_S) is None:
                    raise TimeoutError("peernet sender: no ack")

            def run(n: int, frames: list[Any] = frames) -> None:
                _windowed(n, plan.window, lambda: tx.send(1, frames), ack)

            out[size] = _time_batches(plan, run)
    return out


def _send_pyzmq(conn: Connection, plan: Plan) -> dict[int, list[float]]:
    ctx = zmq.Context()
    push, acks = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    out: dict[int, list[float]] = {}
    try:
        for s in (push, acks):
            s.linger = 0
        push.connect(conn.recv())
        acks.bind("tcp://127.0.0.1:*")
        conn.send(acks.getsockopt_string(zmq.LAST_ENDPOINT))

        def ack() -> None:
            if not acks.poll(int(RECV_TIMEOUT_S * 1000)):
                raise TimeoutError("pyzmq sender: no ack")
            acks.recv()

        for size in plan.sizes:
            _, src = _source(size)

            def send(src: memoryview = src) -> bool:
                push.send(src)  # default copy=True, as most pyzmq code does
                return True

            def run(n: int, send: Callable[[], bool] = send) -> None:
                _windowed(n, plan.window, send, ack)

            out[size] = _time_batches(plan, run)
        return out
    finally:
        push.close(linger=0)
        acks.close(linger=0)
        ctx.term()


def _send_gloo(conn: Connection, plan: Plan) -> dict[int, list[float]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init = f"tcp://127.0.0.1:{port}"
    conn.send(init)
    dist.init_process_group("gloo", init_method=init, world_size=2, rank=0, timeout=timedelta(seconds=RECV_TIMEOUT_S))
    out: dict[int, list[float]] = {}
    try:
        done = torch.zeros(1)
        for size in plan.sizes:
            tensor, _ = _source(size)

            def run(n: int, tensor: torch.Tensor = tensor) -> None:
                for _ in range(n):
                    dist.send(tensor, dst=1)
                dist.recv(done, src=1)  # the receiver has every message of the batch in its buffer

            out[size] = _time_batches(plan, run)
        return out
    finally:
        dist.destroy_process_group()


def measure(method: str, plan: Plan) -> dict[int, list[float]]:
    """Run one method against a spawned receiver; returns seconds per trial for each size, checked by digest."""
    ctx = mp.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=_receiver_main, args=(method, child_conn, plan), daemon=True)
    proc.start()
    try:
        child_conn.close()
        if method == "gloo":
            seconds = _send_gloo(parent_conn, plan)
        else:
            endpoint_wait = parent_conn.poll(RECV_TIMEOUT_S)
            if not endpoint_wait:
                raise TimeoutError(f"{method} receiver did not start")
            seconds = {"peernet": _send_peernet, "pyzmq": _send_pyzmq}[method](parent_conn, plan)
        if not parent_conn.poll(RECV_TIMEOUT_S):
            raise TimeoutError(f"{method} receiver did not report")
        status, payload = parent_conn.recv()
        if status != "ok":
            raise RuntimeError(f"{method} receiver failed:\n{payload}")
        for size in plan.sizes:
            if payload[size] != _digest(_source(size)[1]):
                raise RuntimeError(f"{method}: received {size // MB} MB tensor differs from the one sent")
        return seconds
    finally:
        parent_conn.close()
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.wire", description=__doc__)
    p.add_argument("--sizes", default="4,44", help="tensor sizes in MB (10**6 bytes), comma-separated")
    p.add_argument("--repeats", type=int, default=20, help="timed messages per trial")
    p.add_argument("--trials", type=int, default=3, help="timed trials per size; the median is reported")
    p.add_argument("--warmup", type=int, default=3, help="untimed messages per size")
    p.add_argument("--window", type=int, default=2, help="unacknowledged messages in flight (peernet, pyzmq)")
    p.add_argument("--chunk", type=int, default=MiB, help="peernet chunk frame size in bytes")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    plan = Plan(
        [int(s) for s in args.sizes.split(",")], args.warmup, args.trials, args.repeats, args.window, args.chunk
    )
    methods = [m for m in args.methods.split(",") if m]
    if unknown := set(methods) - set(METHODS):
        p.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # inherited by the spawned receiver

    rates: dict[tuple[str, int], list[float]] = {}
    for method in methods:
        for size, secs in measure(method, plan).items():
            rates[(method, size)] = [plan.repeats * size / s / 1e9 for s in secs]
    rows = []
    for size in plan.sizes:
        gloo = statistics.median(rates[("gloo", size)]) if ("gloo", size) in rates else None
        for method in methods:
            r = rates[(method, size)]
            med = statistics.median(r)
            rows.append(
                {
                    "method": method,
                    "size_mb": size // MB,
                    "gbps_median": med,
                    "gbps_min": min(r),
                    "gbps_max": max(r),
                    "vs_gloo": med / gloo if gloo else None,
                }
            )
    info = machine()
    if args.json:
        print(json.dumps({"machine": info, "plan": vars(args), "results": rows}, indent=2))
        return
    print(
        f"# {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), python {info['python']}, "
        f"torch {info['torch']}, pyzmq {info['pyzmq']}, libzmq {info['libzmq']}"
    )
    print(
        f"# one-way loopback, 2 processes; MB = 1e6 B, GB/s = 1e9 B/s; {args.warmup} warm-up + {args.trials} trials"
        f" x {args.repeats} msgs; zmq acked per message with window {args.window}, gloo acked per trial"
    )
    print(f"{'method':<56} {'size':>6} {'GB/s':>7} {'min':>7} {'max':>7} {'vs gloo':>8}")
    for row in rows:
        label = LABELS[row["method"]].format(chunk=f"{plan.chunk // 1024} KiB")
        ratio = f"{row['vs_gloo']:.2f}x" if row["vs_gloo"] else "-"
        print(
            f"{label:<56} {row['size_mb']:>3} MB {row['gbps_median']:>7.2f} {row['gbps_min']:>7.2f} "
            f"{row['gbps_max']:>7.2f} {ratio:>8}"
        )


if __name__ == "__main__":
    main()
