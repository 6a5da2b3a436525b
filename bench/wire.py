"""One-way tensor throughput between two processes on loopback: peernet transport vs raw pyzmq vs gloo."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

import torch
import torch.distributed as dist
import zmq

from bench.child import answer, reap, report
from bench.wire_ceiling import Job, Knobs, run_jobs, search
from peernet.transport import CurveKeys, ZmqTransport

MB = 1_000_000  # sizes are decimal megabytes, rates decimal GB/s (10**9 bytes per second)
MiB = 1 << 20
TIMEOUT_S = 30.0
LABELS = {
    "peernet": "peernet ZmqTransport, {chunk} KiB chunk frames, copy=False",
    "peernet-ipc": "peernet ZmqTransport over ipc://, {chunk} KiB chunk frames",
    "peernet-curve": "peernet ZmqTransport + CURVE, {chunk} KiB chunk frames",
    "ceiling": "raw pyzmq, the fastest settings the search found",
    "pyzmq": "raw pyzmq PUSH/PULL, 1 frame, default copy",
    "gloo": "torch.distributed gloo send/recv",
}


@dataclass(frozen=True)
class Plan:
    """What both processes agree on before the first byte moves (sizes in bytes); picklable for the receiver."""

    sizes: list[int]
    warmup: int
    trials: int
    repeats: int
    window: int
    chunk: int
    io_threads: int = 1
    ipc_dir: str | None = None  # peernet-ipc: where the receiver binds its socket

    def batches(self) -> list[int]:
        return [self.warmup] + [self.repeats] * self.trials


def _tensor(nbytes: int, seed: int | None = None) -> tuple[torch.Tensor, memoryview]:
    """A float32 tensor and a flat byte view of its memory (random when seeded, else zeros)."""
    n = nbytes // 4
    t = torch.zeros(n) if seed is None else torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return t, t.numpy().data.cast("B")


def _digest(view: memoryview) -> str:
    return hashlib.blake2b(view, digest_size=16).hexdigest()


def _windowed(count: int, *, window: int, send: Callable[[], bool], ack: Callable[[], None]) -> None:
    """Keep up to ``window`` messages unacknowledged; the receiver acks each one after copying it out."""
    sent = acked = 0
    while acked < count:
        if sent < count and sent - acked < window and send():
            sent += 1
        elif sent == acked:
            time.sleep(0.0005)  # refused with nothing in flight: the connection is not up yet
        else:
            ack()
            acked += 1


# ---- receiver (spawned process): fills one preallocated tensor per size, reports a digest of it --------------


Keys = tuple[tuple[bytes, bytes], tuple[bytes, bytes]] | None  # (sender pair, receiver pair) for peernet-curve


def _curve(keys: Keys, me: int) -> CurveKeys | None:
    """Node ``me``'s CURVE settings (0 sends, 1 receives), or None for the plain transport."""
    if keys is None:
        return None
    return CurveKeys(*keys[me], {1 - me: keys[1 - me][0]})


def _transport(node: int, plan: Plan, keys: Keys) -> tuple[ZmqTransport, zmq.Context]:
    """A peernet transport as a daemon has it (tcp on loopback, or ipc in ``plan.ipc_dir``), and its context."""
    bind = f"ipc://{plan.ipc_dir}/node{node}.sock" if plan.ipc_dir else "tcp://127.0.0.1:*"
    ctx = zmq.Context(io_threads=plan.io_threads)
    try:
        return ZmqTransport(node, bind, curve=_curve(keys, node), context=ctx), ctx
    except BaseException:
        ctx.term()
        raise


def _recv_peernet(conn: Connection, plan: Plan, keys: Keys = None) -> dict[int, Any]:
    """Receives as the daemon's exchange does: the payload straight into a preallocated tensor (recv_into)."""
    rx, ctx = _transport(1, plan, keys)
    try:
        conn.send(rx.endpoint)
        rx.connect(0, conn.recv())
        digests: dict[int, Any] = {}
        cpu0 = time.process_time()
        for size in plan.sizes:
            _, dest = _tensor(size)
            views = [dest[i : i + plan.chunk] for i in range(0, size, plan.chunk)]
            sizes = [v.nbytes for v in views]

            def place(sender: int, header: memoryview, views: list[memoryview] = views) -> list[memoryview]:
                return views

            for _ in range(sum(plan.batches())):
                got = rx.recv(TIMEOUT_S, place)
                if got is None:
                    raise TimeoutError("peernet receiver: no message")
                if [f.nbytes for f in got[1][1:]] != sizes:
                    raise RuntimeError("peernet receiver: a message did not match its frames")
                while not rx.send(0, [got[1][0]]):
                    time.sleep(0.0001)
            digests[size] = _digest(dest)
        digests[-1] = time.process_time() - cpu0  # this process's CPU seconds (its libzmq threads included)
        return digests
    finally:
        rx.close()
        ctx.term()


def _recv_pyzmq(conn: Connection, plan: Plan) -> dict[int, str]:
    ctx = zmq.Context()
    try:
        pull, ack = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
        pull.bind("tcp://127.0.0.1:*")
        conn.send(pull.getsockopt_string(zmq.LAST_ENDPOINT))
        ack.connect(conn.recv())
        digests = {}
        for size in plan.sizes:
            _, dest = _tensor(size)
            for _ in range(sum(plan.batches())):
                if not pull.poll(int(TIMEOUT_S * 1000)):
                    raise TimeoutError("pyzmq receiver: no message")
                dest[:] = pull.recv()  # a fresh bytes object each time, as default pyzmq code gets it
                ack.send(b"a")
            digests[size] = _digest(dest)
        return digests
    finally:
        ctx.destroy(linger=0)


def _recv_gloo(conn: Connection, plan: Plan) -> dict[int, str]:
    dist.init_process_group("gloo", init_method=conn.recv(), world_size=2, rank=1, timeout=timedelta(seconds=TIMEOUT_S))
    try:
        digests, done = {}, torch.zeros(1)
        for size in plan.sizes:
            tensor, dest = _tensor(size)
            for batch in plan.batches():
                for _ in range(batch):
                    dist.recv(tensor, src=0)
                dist.send(done, dst=0)
            digests[size] = _digest(dest)
        return digests
    finally:
        dist.destroy_process_group()


def _receiver_main(method: str, conn: Connection, plan: Plan, keys: Keys) -> None:
    receivers: dict[str, Callable[[Connection, Plan], dict[int, Any]]] = {
        "peernet": _recv_peernet, "peernet-ipc": _recv_peernet, "peernet-curve": partial(_recv_peernet, keys=keys),
        "pyzmq": _recv_pyzmq, "gloo": _recv_gloo}
    report(conn, lambda: receivers[method](conn, plan))


# ---- sender (this process): returns the seconds of each timed trial, per size ---------------------------------


def _answer(conn: Connection) -> Any:
    return answer(conn, TIMEOUT_S)


def _trials(plan: Plan, run: Callable[[int], None]) -> list[float]:
    seconds = []
    for i, batch in enumerate(plan.batches()):
        start = time.perf_counter()
        run(batch)
        if i:  # batch 0 is the warm-up
            seconds.append(time.perf_counter() - start)
    return seconds


def _send_peernet(conn: Connection, plan: Plan, keys: Keys = None) -> dict[int, list[float]]:
    tx, ctx = _transport(0, plan, keys)
    try:
        tx.connect(1, _answer(conn))
        conn.send(tx.endpoint)

        def ack() -> None:
            if tx.recv(TIMEOUT_S) is None:
                raise TimeoutError("peernet sender: no ack")

        out: dict[int, list[float]] = {}
        cpu0 = time.process_time()
        for size in plan.sizes:
            _, src = _tensor(size, seed=size)
            frames: list[bytes | memoryview] = [b"d", *(src[i : i + plan.chunk] for i in range(0, size, plan.chunk))]
            out[size] = _trials(plan, partial(_windowed, window=plan.window, send=partial(tx.send, 1, frames), ack=ack))
        out[-1] = [time.process_time() - cpu0]
        return out
    finally:
        tx.close()
        ctx.term()


def _send_pyzmq(conn: Connection, plan: Plan) -> dict[int, list[float]]:
    ctx = zmq.Context()
    try:
        push, acks = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        push.connect(_answer(conn))
        acks.bind("tcp://127.0.0.1:*")
        conn.send(acks.getsockopt_string(zmq.LAST_ENDPOINT))

        def ack() -> None:
            if not acks.poll(int(TIMEOUT_S * 1000)):
                raise TimeoutError("pyzmq sender: no ack")
            acks.recv()

        def send(src: memoryview) -> bool:
            push.send(src)  # default copy=True, as most pyzmq code sends
            return True

        out = {}
        for size in plan.sizes:
            src = _tensor(size, seed=size)[1]
            out[size] = _trials(plan, partial(_windowed, window=plan.window, send=partial(send, src), ack=ack))
        return out
    finally:
        ctx.destroy(linger=0)


def _send_gloo(conn: Connection, plan: Plan) -> dict[int, list[float]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        init = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    conn.send(init)
    dist.init_process_group("gloo", init_method=init, world_size=2, rank=0, timeout=timedelta(seconds=TIMEOUT_S))
    try:
        out, done = {}, torch.zeros(1)
        for size in plan.sizes:
            tensor, _ = _tensor(size, seed=size)

            def run(n: int, tensor: torch.Tensor = tensor) -> None:
                for _ in range(n):
                    dist.send(tensor, dst=1)
                dist.recv(done, src=1)  # the receiver holds every message of the batch

            out[size] = _trials(plan, run)
        return out
    finally:
        dist.destroy_process_group()


def measure(method: str, plan: Plan, cpu: dict[str, float] | None = None) -> dict[int, list[float]]:
    """Run one method against a spawned receiver, check what arrived by digest, and always reap the child.

    For the peernet methods, ``cpu`` (when given) gets each process's CPU seconds over the whole exchange,
    libzmq's I/O threads included: ``{"sender": s, "receiver": s}``."""
    if method == "ceiling":
        raise ValueError("the ceiling row is measured by bench.wire_ceiling")
    ctx = mp.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe()
    # Both key pairs are made here: each side's allowlist must hold the other's key before it binds.
    keys: Keys = (zmq.curve_keypair(), zmq.curve_keypair()) if method == "peernet-curve" else None
    with tempfile.TemporaryDirectory(prefix="peernet-wire-") as tmp:
        if method == "peernet-ipc":
            plan = dataclasses.replace(plan, ipc_dir=tmp)
        proc = ctx.Process(target=_receiver_main, args=(method, child_conn, plan, keys), daemon=True)
        proc.start()
        try:
            child_conn.close()
            senders: dict[str, Callable[[Connection, Plan], dict[int, list[float]]]] = {
                "peernet": _send_peernet, "peernet-ipc": _send_peernet,
                "peernet-curve": partial(_send_peernet, keys=keys), "pyzmq": _send_pyzmq, "gloo": _send_gloo}
            seconds = senders[method](parent_conn, plan)
            _, digests = _answer(parent_conn)
            for size in plan.sizes:
                if digests[size] != _digest(_tensor(size, seed=size)[1]):
                    raise RuntimeError(f"{method}: the {size // MB} MB tensor received differs from the one sent")
            if cpu is not None and -1 in seconds:
                cpu.update(sender=seconds[-1][0], receiver=digests[-1])
            return {size: seconds[size] for size in plan.sizes}
        finally:
            parent_conn.close()
            reap(proc)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    versions = dict(python=platform.python_version(), torch=torch.__version__, pyzmq=zmq.__version__)
    return dict(
        cpu=cpu, cores=os.cpu_count(), usable_cores=len(os.sched_getaffinity(0)), **versions, libzmq=zmq.zmq_version()
    )


def _ceiling_rates(plan: Plan, best: dict[int, Knobs]) -> dict[int, list[float]]:
    jobs = [Job(best[size], size, plan.warmup, plan.trials, plan.repeats, plan.window) for size in plan.sizes]
    return {job.size: [job.repeats * job.size / s / 1e9 for s in secs]
            for job, secs in zip(jobs, run_jobs(jobs), strict=True)}


def _rows(plan: Plan, methods: list[str], rates: dict[tuple[str, int], list[float]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for size in plan.sizes:
        gloo = statistics.median(rates["gloo", size]) if ("gloo", size) in rates else None
        ceiling = statistics.median(rates["ceiling", size]) if ("ceiling", size) in rates else None
        for method in methods:
            r, med = rates[method, size], statistics.median(rates[method, size])
            rows.append(dict(method=method, size_mb=size // MB, gbps_median=med, gbps_min=min(r), gbps_max=max(r),
                             samples=len(r), vs_gloo=med / gloo if gloo else None,
                             vs_ceiling=med / ceiling if ceiling else None))
    return rows


def curve_analysis(size: int, *, repeats: int, rounds: int) -> list[dict[str, Any]]:
    """Where CURVE's time goes: plain and CURVE peernet over chunk size and I/O threads, with each process's CPU
    seconds per GB moved (libzmq's I/O threads, where libsodium runs, included)."""
    out = []
    for chunk in (256 * 1024, MiB, 4 * MiB):
        for io in (1, 2):
            plan = Plan([size], warmup=2, trials=1, repeats=repeats, window=2, chunk=chunk, io_threads=io)
            for method in ("peernet", "peernet-curve"):
                rates, cpus = [], []
                for _ in range(rounds):
                    cpu: dict[str, float] = {}
                    secs = measure(method, plan, cpu)[size]
                    rates += [plan.repeats * size / t / 1e9 for t in secs]
                    moved = sum(plan.batches()) * size / 1e9
                    cpus.append((cpu["sender"] / moved, cpu["receiver"] / moved))
                out.append(dict(method=method, chunk_kib=chunk // 1024, io_threads=io, size_mb=size // MB,
                                gbps_median=statistics.median(rates), gbps_min=min(rates), gbps_max=max(rates),
                                sender_cpu_s_per_gb=statistics.median(c[0] for c in cpus),
                                receiver_cpu_s_per_gb=statistics.median(c[1] for c in cpus)))
    return out


def _print_table(info: dict[str, Any], args: argparse.Namespace, rows: list[dict[str, Any]], chunk: int) -> None:
    print(f"# {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), python {info['python']}, "
          f"torch {info['torch']}, pyzmq {info['pyzmq']}, libzmq {info['libzmq']}")
    print(f"# one-way, 2 processes on loopback; MB = 1e6 B, GB/s = 1e9 B/s; {args.rounds} rounds x {args.trials} "
          f"trials x {args.repeats} msgs after {args.warmup} warm-up\n"
          f"# zmq methods: receiver acks each message, window {args.window}; gloo: receiver acks each trial")
    print(f"{'method':<56} {'size':>6} {'GB/s':>7} {'min':>7} {'max':>7} {'vs gloo':>8} {'vs ceil':>8}")
    for row in rows:
        label = LABELS[row["method"]].format(chunk=chunk // 1024)
        vs = f"{row['vs_gloo']:.2f}x" if row["vs_gloo"] else "-"
        vc = f"{row['vs_ceiling']:.2f}x" if row["vs_ceiling"] else "-"
        print(f"{label:<56} {row['size_mb']:>3} MB {row['gbps_median']:>7.2f} {row['gbps_min']:>7.2f} "
              f"{row['gbps_max']:>7.2f} {vs:>8} {vc:>8}")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.wire", description=__doc__)
    p.add_argument("--sizes", default="4,44", help="tensor sizes in MB (10**6 bytes), comma-separated")
    p.add_argument("--repeats", type=int, default=10, help="timed messages per trial")
    p.add_argument("--trials", type=int, default=2, help="timed trials per size and round")
    p.add_argument(
        "--rounds", type=int, default=6, help="rounds; each runs every method in turn, so load drift hits all"
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed messages per size")
    p.add_argument("--window", type=int, default=2, help="unacknowledged messages in flight (zmq methods)")
    p.add_argument("--chunk", type=int, default=MiB, help="peernet chunk frame size in bytes")
    p.add_argument("--methods", default=",".join(LABELS), help="comma-separated subset of " + ", ".join(LABELS))
    p.add_argument("--no-curve-analysis", action="store_true", help="skip the CURVE chunk/io-thread analysis")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    if unknown := set(methods) - set(LABELS):
        p.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(LABELS)}")
    plan = Plan(
        [int(s) * MB for s in args.sizes.split(",")], args.warmup, args.trials, args.repeats, args.window, args.chunk
    )
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # inherited by the spawned receiver

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    best: dict[int, Knobs] = {}
    searched: dict[int, list[dict[str, Any]]] = {}
    if "ceiling" in methods:
        for size in plan.sizes:
            log(f"ceiling search, {size // MB} MB ...")
            best[size], searched[size] = search(size, log=log)
    rates: dict[tuple[str, int], list[float]] = {(m, size): [] for m in methods for size in plan.sizes}
    for i in range(args.rounds):
        log(f"round {i + 1} of {args.rounds} ...")
        for method in methods:
            got = _ceiling_rates(plan, best) if method == "ceiling" else {
                size: [plan.repeats * size / s / 1e9 for s in secs] for size, secs in measure(method, plan).items()}
            for size, r in got.items():
                rates[method, size] += r
    rows = _rows(plan, methods, rates)
    curve = [] if args.no_curve_analysis or "peernet-curve" not in methods else curve_analysis(
        max(plan.sizes), repeats=args.repeats, rounds=3)
    info = machine()
    if args.json:
        ceiling = {str(size // MB): dict(best=dataclasses.asdict(best[size]), label=best[size].label(),
                                         tried=searched[size]) for size in best}
        print(json.dumps({"machine": info, "args": vars(args), "results": rows, "ceiling": ceiling,
                          "curve_analysis": curve}, indent=2))
        return
    _print_table(info, args, rows, plan.chunk)
    for size, knobs in best.items():
        print(f"# ceiling at {size // MB} MB: {knobs.label()}")
    for row in curve:
        print(f"# {row['method']:<14} chunk {row['chunk_kib']:>5} KiB, {row['io_threads']} io: "
              f"{row['gbps_median']:.2f} GB/s, CPU s/GB sender {row['sender_cpu_s_per_gb']:.2f} "
              f"receiver {row['receiver_cpu_s_per_gb']:.2f}")


if __name__ == "__main__":
    main()
