"""The simulator on a CUDA device: rounds per second against the CPU, and CPU/CUDA agreement on LeNet.

Agreement: 8 LeNet-GN nodes, Momentum Tracking, 20 rounds from the same start and batches, TF32 off. The
CPU runs node by node (its default), CUDA batched (its default), so the convolutions sum in different
orders: in float32 the parameters may differ by rounding amplified over the rounds, stated tolerance
5e-4 (max absolute difference; CPU loop vs CPU vectorized reach 1.4e-4 after 20 rounds of DSGDm); in
float64 the tolerance is 1e-9.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from bench.sim import sim_rounds
from peernet.config import RunSettings
from peernet.core.algorithms import HyperParams, get_algorithm
from peernet.core.topology import generate
from peernet.sim.engine import Simulator
from peernet.tasks import make_task

NO_CUDA = 77  # the "skipped" exit status of automake-style test drivers
TOLERANCE = {"float32": 5e-4, "float64": 1e-9}


def _final(settings: RunSettings, device: str, rounds: int) -> torch.Tensor:
    task = make_task(settings, settings.nodes)
    if device != "cpu":
        task.to_device(torch.device(device))
    sim = Simulator(task, generate("ring", settings.nodes), get_algorithm(settings.algorithm),
                    HyperParams(lr=0.01), track_flows=False)
    try:
        for _ in range(rounds):
            sim.step()
    finally:
        sim.close()
    return sim.X.detach().cpu()


def agreement(rounds: int) -> list[dict[str, Any]]:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out = []
    for dtype in ("float32", "float64"):
        s = RunSettings(model="lenet", nodes=8, batch_size=100, dtype=dtype)
        cpu, cuda = _final(s, "cpu", rounds), _final(s, "cuda", rounds)
        diff = float((cpu - cuda).abs().max())
        out.append({"dtype": dtype, "rounds": rounds, "max_abs_diff": diff, "tolerance": TOLERANCE[dtype],
                    "ok": diff <= TOLERANCE[dtype]})
    return out


def throughput(rounds: int) -> list[dict[str, Any]]:
    rows = []
    for model, nodes, cpu_too in (("lenet", 8, True), ("lenet", 64, True), ("lenet", 1024, False),
                                  ("mlp", 512, True), ("mlp", 4096, False)):
        s = RunSettings(model=model, nodes=nodes, batch_size=100)
        gpu = _cuda_rounds(s, rounds)
        row: dict[str, Any] = {"model": model, "nodes": nodes, "cuda_median_ms": gpu["median_ms"],
                               "cuda_min_ms": gpu["min_ms"], "cuda_max_ms": gpu["max_ms"]}
        if cpu_too:
            cpu = sim_rounds(s, "auto", 0, max(3, rounds // 4))
            row |= {"cpu_median_ms": cpu["median_ms"], "speedup": cpu["median_ms"] / gpu["median_ms"]}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows


def _cuda_rounds(s: RunSettings, rounds: int) -> dict[str, Any]:
    import time

    task = make_task(s, s.nodes)
    task.to_device(torch.device("cuda"))
    sim = Simulator(task, generate("ring", s.nodes), get_algorithm(s.algorithm), HyperParams(lr=0.005),
                    track_flows=False)
    try:
        for _ in range(3):
            sim.step()
        torch.cuda.synchronize()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            sim.step()
            torch.cuda.synchronize()
            times.append(1000 * (time.perf_counter() - t0))
    finally:
        sim.close()
    times.sort()
    return {"min_ms": times[0], "median_ms": times[len(times) // 2], "max_ms": times[-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print(f"bench/gpu.sh: no CUDA device (torch {torch.__version__}: torch.cuda.is_available() is False); "
              "nothing measured", file=sys.stderr)
        sys.exit(NO_CUDA)
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "agreement": agreement(args.rounds), "throughput": throughput(args.rounds)}
    print(json.dumps(result, indent=2))
    sys.exit(0 if all(a["ok"] for a in result["agreement"]) else 1)


if __name__ == "__main__":
    main()
