"""Simulator speed against the hardware floor, the daemons, and itself before this engine, all in one run.

Every comparison is measured in the same run, on the same settings, so only ratios are reported as
results; absolute times depend on the machine and its load. Per-round figures are min / median / max
over many timed rounds after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from peernet.config import RunSettings
from peernet.core.algorithms import HyperParams, get_algorithm
from peernet.core.topology import generate
from peernet.sim.engine import Simulator
from peernet.sim.workers import available_cores
from peernet.tasks import ImageTask, make_task

ROOT = Path(__file__).resolve().parents[1]
#: The study cell the issue names: LeNet, 8-node ring, k = 2, 2 epochs, as studies/fmnist-heterogeneity.toml runs it.
STUDY_CELL = """dataset = "fashion-mnist"
model = "lenet"
nodes = 8
topology = "ring"
algorithm = "momentum-tracking"
partition = "classes"
classes_per_node = 2
batch_size = 100
epochs = 2
val_fraction = 0.1
eval_every = 54
eval_samples = 4000
lr = 0.01
"""


def stats(seconds: list[float]) -> dict[str, float]:
    ms = sorted(1000 * s for s in seconds)
    return {"min_ms": ms[0], "median_ms": statistics.median(ms), "max_ms": ms[-1], "n": len(ms)}


def timed(fn: Callable[[], Any], rounds: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def floor_step(settings: RunSettings, rounds: int) -> dict[str, Any]:
    """One plain nn.Module LeNet-GN step (forward, backward, batch 100) with one torch thread."""
    torch.set_num_threads(1)
    task = ImageTask(settings, settings.nodes)
    model = task.model
    xb, yb = task.data.normalise(task.train_x[:settings.batch_size]), task.train_y[:settings.batch_size]

    def step() -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(xb), yb).backward()

    return stats(timed(step, rounds, warmup=10))


def sim_rounds(settings: RunSettings, mode: str, threads: int, rounds: int, kind: str = "ring") -> dict[str, Any]:
    """Per-round wall time of Simulator.step (training only, no evaluation)."""
    task = make_task(settings, settings.nodes)
    sim = Simulator(task, generate(kind, settings.nodes), get_algorithm(settings.algorithm),
                    HyperParams(lr=settings.step_size), mode=mode, threads=threads, track_flows=False)
    try:
        # Large sizes need one warm-up round only (a round there takes seconds and is steady from the second).
        row = stats(timed(sim.step, rounds, warmup=5 if settings.nodes < 512 else 1))
    finally:
        sim.close()
    return {**row, "mode": sim.mode, "threads": sim.pool.threads, "nodes": settings.nodes, "topology": kind}


@contextmanager
def busy_core() -> Iterator[None]:
    """Another process spinning on one core for the duration (the machine under load)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it get scheduled before measuring
        yield
    finally:
        proc.kill()
        proc.wait()


def cluster_compute(settings: RunSettings, rounds: int) -> dict[str, Any]:
    """`peernet local` (real processes and sockets): each node's compute, wait and mix per round."""
    out = Path(tempfile.mkdtemp(prefix="peernet-bench-"))
    args = [sys.executable, "-m", "peernet", "local", "--quiet", "--json", "--out", str(out / "run"),
            "--checkpoint-every", "0", "--rounds", str(rounds), "--eval-every", str(rounds),
            "--eval-samples", "500", "--algorithm", settings.algorithm, "--model", settings.model,
            "--nodes", str(settings.nodes), "--topology", "ring", "--batch-size", str(settings.batch_size)]
    res = subprocess.run(args, capture_output=True, text=True, timeout=1800, env=dict(os.environ, OMP_NUM_THREADS="1"))
    subprocess.run(["rm", "-rf", str(out)], check=False)
    if res.returncode != 0:
        raise RuntimeError(f"peernet local failed:\n{res.stderr[-2000:]}")
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    return {"nodes": settings.nodes, "rounds": rounds, "samples_per_s": summary["samples_per_second"],
            "compute_ms": 1000 * summary["round_compute_s"], "wait_ms": 1000 * summary["round_wait_s"],
            "mix_ms": 1000 * summary["round_mix_s"]}


def study_cell(before_ref: str, repeats: int) -> dict[str, Any]:
    """Wall time of `peernet simulate` on the study cell, at this tree and at ``before_ref`` (a git worktree)."""
    work = Path(tempfile.mkdtemp(prefix="peernet-cell-"))
    (work / "cell.toml").write_text(STUDY_CELL)
    old = work / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), before_ref],
                   check=True, capture_output=True)
    try:
        out: dict[str, Any] = {"before_ref": before_ref}
        for label, path in (("before", old), ("after", ROOT)):
            times, acc = [], None
            for _ in range(repeats):
                t0 = time.perf_counter()
                res = subprocess.run([sys.executable, "-m", "peernet", "simulate", "--config", str(work / "cell.toml"),
                                      "--quiet", "--json"], capture_output=True, text=True, cwd=path, timeout=3600,
                                     env=dict(os.environ, PYTHONPATH=str(path)))
                times.append(time.perf_counter() - t0)
                if res.returncode != 0:
                    raise RuntimeError(f"study cell ({label}) failed:\n{res.stderr[-2000:]}")
                acc = json.loads(res.stdout.strip().splitlines()[-1])["mean_test_accuracy"]
            out[label] = {"min_s": min(times), "median_s": statistics.median(times), "max_s": max(times),
                          "mean_test_accuracy": acc}
        return out
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
        subprocess.run(["rm", "-rf", str(work)], check=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=100, help="timed rounds per simulator measurement")
    p.add_argument("--before", default="0633a38", help="git ref of the simulator before this engine")
    p.add_argument("--repeats", type=int, default=3, help="runs of the study cell at each version")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    lenet = RunSettings(model="lenet", nodes=8, topology="ring", batch_size=100)
    cores = available_cores()
    rows: dict[str, Any] = {"cores": cores, "floor_step": floor_step(lenet, args.rounds * 2)}
    rows["floor_round_ms"] = rows["floor_step"]["median_ms"] * lenet.nodes / cores
    rows["auto"] = sim_rounds(lenet, "auto", 0, args.rounds)
    rows["loop_1thread"] = sim_rounds(lenet, "loop", 1, args.rounds)
    rows["vectorized"] = sim_rounds(lenet, "vectorized", 0, args.rounds)
    with busy_core():
        rows["auto_loaded"] = sim_rounds(lenet, "auto", 0, args.rounds)
        rows["floor_step_loaded"] = floor_step(lenet, args.rounds)
    rows["daemons"] = cluster_compute(lenet, 120)
    rows["study_cell"] = {**study_cell(args.before, args.repeats), "repeats": args.repeats}
    print(json.dumps(rows, indent=2) if args.json else rows)


if __name__ == "__main__":
    main()
