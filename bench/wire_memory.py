"""Receiver memory while 400 MB tensors arrive: received in place (the daemon's path) vs as frames, then copied."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import torch

from bench.child import reap
from peernet.transport import ZmqTransport

MB = 1_000_000
MiB = 1 << 20
TIMEOUT_S = 60.0


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024 * 1.048576  # kB -> MB (10**6 bytes)
    raise RuntimeError(f"no {field} in /proc/self/status")


def _receiver(conn: Connection, size: int, count: int, in_place: bool) -> None:
    try:
        with ZmqTransport(1, max_msg_size=size + MiB) as rx:
            conn.send(rx.endpoint)
            rx.connect(0, conn.recv())
            dest = torch.zeros(size // 4)
            flat = dest.numpy().data.cast("B")
            views = [flat[i : i + MiB] for i in range(0, size, MiB)]
            base = _status_mb("VmRSS")
            rss = []
            for _ in range(count):
                got = rx.recv(TIMEOUT_S, (lambda s, h: views) if in_place else None)
                if got is None:
                    raise TimeoutError("no message")
                if not in_place:
                    offset = 0
                    for frame in got[1][1:]:
                        flat[offset : offset + frame.nbytes] = frame
                        offset += frame.nbytes
                del got  # the frames' memory, where there is any, goes back before the next message
                rss.append(_status_mb("VmRSS"))
                rx.send(0, [b"a"])
            result = dict(before=base, after_each=rss, peak=_status_mb("VmHWM"), check=float(dest[::997].sum()))
            conn.send(("ok", result))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def measure(size: int, count: int, in_place: bool) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_receiver, args=(child, size, count, in_place), daemon=True)
    proc.start()
    try:
        with ZmqTransport(0) as tx:
            tx.connect(1, parent.recv())
            parent.send(tx.endpoint)
            src = torch.arange(size // 4, dtype=torch.float32)
            flat = src.numpy().data.cast("B")
            frames: list[bytes | memoryview] = [b"d", *(flat[i : i + MiB] for i in range(0, size, MiB))]
            start = time.perf_counter()
            for _ in range(count):
                deadline = time.monotonic() + TIMEOUT_S
                while not tx.send(1, frames):
                    if time.monotonic() > deadline:
                        raise TimeoutError("receiver never connected")
                    time.sleep(0.001)
                if tx.recv(TIMEOUT_S) is None:
                    raise TimeoutError("no ack")
            seconds = time.perf_counter() - start
        if not parent.poll(TIMEOUT_S):
            raise TimeoutError("receiver did not report")
        status, result = parent.recv()
        if status != "ok":
            raise RuntimeError(result)
        if result["check"] != float(src[::997].sum()):
            raise RuntimeError("the tensor received differs from the one sent")
        rss = result["after_each"]
        return dict(path="in place" if in_place else "frames + copy", size_mb=size // MB, messages=count,
                    rss_before_mb=result["before"], rss_first_mb=rss[0], rss_last_mb=rss[-1], rss_max_mb=max(rss),
                    growth_from_second_mb=rss[-1] - rss[1] if len(rss) > 1 else 0.0,
                    series=[round(x) for x in rss], peak_mb=result["peak"], gbps=count * size / seconds / 1e9)
    finally:
        parent.close()
        reap(proc)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.wire_memory", description=__doc__)
    p.add_argument("--size", type=int, default=400, help="tensor size in MB")
    p.add_argument("--messages", type=int, default=20)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = [measure(args.size * MB, args.messages, in_place) for in_place in (True, False)]
    if args.json:
        print(json.dumps({"results": rows}, indent=2))
        return
    for r in rows:
        print(f"{r['path']:<14} {r['size_mb']} MB x {r['messages']}: RSS before {r['rss_before_mb']:.0f} MB, after "
              f"first {r['rss_first_mb']:.0f}, after last {r['rss_last_mb']:.0f} (max {r['rss_max_mb']:.0f}), "
              f"peak {r['peak_mb']:.0f} MB, {r['gbps']:.2f} GB/s")


if __name__ == "__main__":
    main()
