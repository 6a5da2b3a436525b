"""Training throughput of the simulator (vectorised vs per-node loop) and of a real daemon cluster.

Every comparison is measured in the same run, on the same settings, so only ratios are reported as
results; absolute samples/s depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from peernet.config import RunSettings
from peernet.core.algorithms import HyperParams, get_algorithm
from peernet.core.topology import generate
from peernet.sim.engine import Simulator
from peernet.sim.tasks import make_task


def sim_throughput(settings: RunSettings, mode: str, rounds: int, warmup: int = 3) -> dict[str, Any]:
    """Samples per second of training rounds only (no evaluation), after ``warmup`` rounds."""
    task = make_task(settings, settings.nodes)
    topo = generate(settings.topology, settings.nodes)
    sim = Simulator(task, topo, get_algorithm(settings.algorithm), HyperParams(lr=settings.step_size),
                    mode=mode)  # type: ignore[arg-type]
    try:
        for _ in range(warmup):
            sim.step()
        t0 = time.perf_counter()
        for _ in range(rounds):
            sim.step()
        seconds = time.perf_counter() - t0
    finally:
        sim.close()
    return {"mode": mode, "nodes": settings.nodes, "rounds": rounds, "seconds": seconds,
            "samples_per_s": rounds * settings.nodes * settings.batch_size / seconds,
            "ms_per_round": 1000 * seconds / rounds}


def cluster_throughput(settings: RunSettings, rounds: int) -> dict[str, Any]:
    """Samples/s of `peernet local` (real processes and sockets) from the nodes' own round timestamps."""
    out = Path(tempfile.mkdtemp(prefix="peernet-bench-"))
    try:
        args = [sys.executable, "-m", "peernet", "local", "--quiet", "--json", "--out", str(out / "run"),
                "--checkpoint-every", "0", "--rounds", str(rounds), "--eval-every", str(rounds),
                "--eval-samples", "500", "--algorithm", settings.algorithm, "--model", settings.model,
                "--nodes", str(settings.nodes), "--topology", settings.topology,
                "--batch-size", str(settings.batch_size)]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        res = subprocess.run(args, capture_output=True, text=True, timeout=1800, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"peernet local failed:\n{res.stderr[-2000:]}")
        summary = json.loads(res.stdout.strip().splitlines()[-1])
        rss = _node_rss_mb(out / "run")
        return {"mode": "daemons", "nodes": settings.nodes, "rounds": rounds,
                "samples_per_s": summary["samples_per_second"],
                "compute_s": summary["round_compute_s"], "wait_s": summary["round_wait_s"],
                "mix_s": summary["round_mix_s"], "rss_mb_per_node": rss}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _node_rss_mb(run_dir: Path) -> float | None:
    """Peak resident memory per node, as the nodes reported it at exit (0 when not recorded)."""
    values = []
    for summary in run_dir.glob("nodes/*/summary.json"):
        rss = json.loads(summary.read_text()).get("max_rss_mb")
        if rss:
            values.append(float(rss))
    return sum(values) / len(values) if values else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=30, help="timed rounds per measurement")
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads for the simulator (0: all cores)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lenet = RunSettings(model="lenet", nodes=args.nodes, topology="ring", batch_size=100)
    rows: dict[str, Any] = {
        "vectorized": sim_throughput(lenet, "vectorized", args.rounds),
        "loop": sim_throughput(lenet, "loop", args.rounds),
    }
    torch.set_num_threads(1)  # the per-node loop as one daemon computes: one thread
    rows["loop_1thread"] = sim_throughput(lenet, "loop", args.rounds)
    rows["daemons"] = cluster_throughput(lenet, args.rounds * 2)
    rows["peak_rss_mb_launcher"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(rows, indent=2) if args.json else rows)


if __name__ == "__main__":
    main()
