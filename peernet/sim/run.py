"""Run a whole simulation from RunSettings: rounds, periodic evaluation, JSONL metrics, summary."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from peernet.atomic import write_atomic
from peernet.config import (
    RunSettings,
    eval_interval,
    resolve_topology,
    scheduled_step_size,
    total_rounds,
    tracker_start,
)
from peernet.core.algorithms import HyperParams, get_algorithm
from peernet.core.clipping import clip_radii
from peernet.core.compressed_gossip import StackedCompressedGossip
from peernet.core.mixing import consensus_distance
from peernet.device import resolve_device
from peernet.errors import SimulationError
from peernet.metrics.jsonl import MetricsWriter
from peernet.metrics.memory import peak_rss_mb
from peernet.metrics.progress import Progress
from peernet.rundir import SETTINGS_NAME, run_record, settings_digest
from peernet.sim.engine import Mode, Simulator
from peernet.tasks import Task, make_task, run_compressor

SUMMARY_KEYS = ("algorithm", "nodes", "rounds", "wall_seconds", "mean_test_accuracy",
                "averaged_model_test_accuracy", "consensus_distance")


def run_simulation(settings: RunSettings, out_dir: str | Path | None = None, *, mode: Mode = "auto",
                   progress: bool = True, device: str = "auto", threads: int = 0) -> dict[str, Any]:
    """Train, evaluate every ``eval_every`` rounds and at the end; return the summary dictionary.

    With ``out_dir`` the settings, ``metrics.jsonl`` (one record per round and per evaluation) and
    ``summary.json`` are written there. ``device`` is auto, cpu, cuda or cuda:N; ``threads`` the worker
    threads on a CPU (0: every available core).
    """
    dev = resolve_device(device)  # first, so a missing GPU is reported before any data is loaded
    topology = resolve_topology(settings, key_files=False)  # the simulator needs the graph, not CURVE keys
    task = make_task(settings, topology.n)
    if dev.type != "cpu":
        task.to_device(dev)
    hp = HyperParams(lr=settings.step_size, beta=settings.beta, weight_decay=settings.weight_decay)
    # A simulate run never removes nodes, so it keeps no tracker-flow bookkeeping (one (N, P) sum less).
    algorithm = get_algorithm(settings.algorithm)
    rounds = total_rounds(settings, task.rounds_per_epoch)
    sim = Simulator(task, topology, algorithm, hp, mode=mode, threads=threads, track_flows=False,
                    clip=clip_radii(algorithm, settings.clip_tau, settings.clip_tau_tracker),
                    compression=compression_of(settings, task), start=tracker_start(settings, rounds))
    out = Path(out_dir) if out_dir is not None else None
    writer = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / SETTINGS_NAME, json.dumps(run_record(settings, topology.n), indent=2) + "\n")
        writer = MetricsWriter(out / "metrics.jsonl")
    start = time.perf_counter()
    try:
        last_eval, train_seconds = _train(sim, settings, rounds, writer, progress)
    finally:
        sim.close()
        if writer:
            writer.close()
    summary = _summary(sim, settings, rounds, last_eval, time.perf_counter() - start, train_seconds)
    if out is not None:
        write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        final = {"params": sim.X.detach().cpu().clone(), "round": rounds}
        write_atomic(out / "final_params.pt", lambda fh: torch.save(final, fh))
    return summary


def compression_of(settings: RunSettings, task: Task) -> StackedCompressedGossip | None:
    """The run's compressed gossip for the simulator, or None for plain gossip (``compression = "none"``)."""
    made = run_compressor(settings, task)
    return None if made is None else StackedCompressedGossip(*made)


def _train(sim: Simulator, settings: RunSettings, rounds: int, writer: MetricsWriter | None, progress: bool
           ) -> tuple[dict[str, Any], float]:
    """The rounds, with metrics and evaluations; returns the last evaluation and the seconds spent training."""
    every = eval_interval(settings, rounds)
    per_epoch = sim.task.rounds_per_epoch
    bar = Progress(rounds, f"simulate {settings.algorithm}", enabled=progress)
    last_eval: dict[str, Any] = {}
    train_seconds = 0.0
    try:
        for r in range(rounds):
            sim.hp = dataclasses.replace(sim.hp, lr=scheduled_step_size(settings, r, rounds))
            t0 = time.perf_counter()
            losses = sim.step()
            train_seconds += time.perf_counter() - t0
            loss = float(losses.mean())
            if not math.isfinite(loss):
                hint = (f" or a smaller consensus_step than {sim.compression.gamma}"
                        if sim.compression is not None else "")
                raise SimulationError(f"training diverged at round {r + 1} (loss {loss}); "
                                      f"try a smaller step size than {settings.step_size}{hint}")
            if writer:
                writer.write({"event": "round", "round": r + 1, "loss": loss,
                              "node_loss": [float(v) for v in losses]})
            if (r + 1) % every == 0 or r + 1 == rounds:
                last_eval = _evaluate(sim, r + 1, per_epoch, final=r + 1 == rounds)
                if writer:
                    writer.write(last_eval)
            bar.update(r + 1, loss=loss, **_headline(last_eval))
    finally:
        bar.close()
    return last_eval, train_seconds


def _summary(sim: Simulator, settings: RunSettings, rounds: int, last_eval: dict[str, Any], wall: float,
             train_seconds: float) -> dict[str, Any]:
    n = sim.topology.n
    summary: dict[str, Any] = {
        "algorithm": settings.algorithm,
        "nodes": n,
        "topology": sim.topology.name or settings.topology,
        "dataset": settings.dataset,
        "rounds": rounds,
        "epochs": rounds / sim.task.rounds_per_epoch,
        "lr": settings.step_size,
        "settings_digest": settings_digest(settings),  # the same as settings.json's: report checks they agree
        "wall_seconds": wall,
        "train_seconds": train_seconds,
        "mode": sim.mode,
        "device": str(sim.device),
        "threads": sim.pool.threads,
        "peak_rss_mb": peak_rss_mb(),
        "mean_test_accuracy": last_eval.get("mean_test_accuracy"),
        "averaged_model_test_accuracy": last_eval.get("averaged_model_test_accuracy"),
        "consensus_distance": last_eval.get("consensus_distance"),
    }
    if sim.compression is not None:  # all tensors of one node's round message, on average
        summary["message_bytes_per_node"] = sim.compression.bytes_sent / n
    else:  # the dense tensors themselves, so that compressed and plain runs compare (peernet report --target)
        summary["message_bytes_per_node"] = (len(sim.algorithm.sent) * sim.task.dim
                                             * sim.task.dtype.itemsize)
    if settings.dataset != "quadratic":
        summary["samples_per_second"] = rounds * n * settings.batch_size / max(train_seconds, 1e-9)
    for key in ("distance_to_optimum", "mean_val_accuracy", "averaged_model_val_accuracy", "final_loss"):
        if key in last_eval:
            summary[key] = last_eval[key]
    return summary


def _evaluate(sim: Simulator, round_: int, rounds_per_epoch: int, *, final: bool) -> dict[str, Any]:
    """The eval record of ``round_``: on the first eval_samples test samples, or all of them when ``final``."""
    record: dict[str, Any] = {"event": "eval", "round": round_, "epoch": round_ / rounds_per_epoch}
    X = sim.X  # one (N, P) copy for both: the simulator keeps the parameters in column blocks
    record.update(sim.evaluate(X, final=final))
    record["consensus_distance"] = consensus_distance(X)
    return record


def _headline(ev: dict[str, Any]) -> dict[str, float]:
    keys = ("mean_test_accuracy", "distance_to_optimum")
    return {k.replace("mean_test_accuracy", "acc").replace("distance_to_optimum", "dist"): float(ev[k])
            for k in keys if k in ev}
