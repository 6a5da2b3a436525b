"""Merge the per-node outputs of a daemon run into one summary with the simulator's keys, and plot it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from peernet.config import RunSettings
from peernet.core.algorithms import get_algorithm
from peernet.core.mixing import consensus_distance
from peernet.core.topology import Topology
from peernet.metrics.jsonl import read_jsonl
from peernet.node.checkpoint import CHECKPOINT_NAME
from peernet.rundir import settings_digest
from peernet.tasks import ImageTask, make_task


def _final_checkpoints(state_dirs: dict[int, Path]) -> list[dict[str, Any]]:
    """Each node's final checkpoint payload, in node-id order (tensors only: weights_only)."""
    return [torch.load(state_dirs[i] / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
            for i in sorted(state_dirs)]


def _stacked_params(payloads: list[dict[str, Any]]) -> torch.Tensor:
    return torch.stack([payload["params"] for payload in payloads])


def final_params(state_dirs: dict[int, Path]) -> torch.Tensor:
    """Node-stacked final parameters read from each node's checkpoint, in node-id order."""
    return _stacked_params(_final_checkpoints(state_dirs))


def tracker_sum_error(payloads: list[dict[str, Any]], tracker: str) -> float | None:
    """‖Σ_i c_i‖ / max_i ‖c_i‖ over the nodes' final trackers (the rule's state entry named ``tracker``;
    docs/design.md §3: zero up to rounding), or None for rules without one. A node that left for good has no
    payload here: the survivors' trackers alone must sum to zero."""
    if not tracker:
        return None
    trackers = []
    for payload in payloads:
        c = payload["state"].get(tracker)
        if c is None:
            return None
        trackers.append(c.double())
    if not trackers:
        return None
    largest = max(float(c.norm()) for c in trackers)
    return float(torch.stack(trackers).sum(dim=0).norm()) / largest if largest > 0 else 0.0


def merge_run(settings: RunSettings, topology: Topology, state_dirs: dict[int, Path],
              wall_seconds: float) -> dict[str, Any]:
    """Summary of a finished run: the same keys as ``peernet simulate --json``."""
    node_summaries = {i: json.loads((d / "summary.json").read_text()) for i, d in state_dirs.items()
                      if (d / "summary.json").exists()}
    payloads = _final_checkpoints(state_dirs)  # read once: parameters and trackers
    X = _stacked_params(payloads)
    task = make_task(settings, topology.n)
    nodes = sorted(state_dirs)
    everyone = nodes == list(range(topology.n))
    ev = None
    if settings.dataset == "quadratic":
        # After a crash for good, only the survivors' models exist: their distance is to *their* optimum.
        problem = task.problem  # type: ignore[union-attr]
        target = None if everyone else problem.optimum_of(nodes, settings.weight_decay)
        ev = {"distance_to_optimum": problem.distance_to_optimum(X, optimum=target)}
    summary: dict[str, Any] = {
        "algorithm": settings.algorithm,
        "nodes": topology.n,
        "topology": topology.name or settings.topology,
        "dataset": settings.dataset,
        "rounds": max((s.get("final_round", 0) for s in node_summaries.values()), default=0),
        "lr": settings.step_size,
        "settings_digest": settings_digest(settings),  # the same as settings.json's: report checks they agree
        "wall_seconds": wall_seconds,
        "mode": "daemons",
        "mean_test_accuracy": None,
        "averaged_model_test_accuracy": None,
        "consensus_distance": consensus_distance(X),
        "finished_nodes": sum(bool(s.get("finished")) for s in node_summaries.values()),
        "dropped_messages": sum(sum(s.get("dropped", {}).values()) for s in node_summaries.values()),
        "bytes_out": sum(s.get("bytes_out", 0) for s in node_summaries.values()),
        # Fault handling: rounds a neighbour was excluded for missing its deadline, catch-ups, crash rejoins.
        "timeouts": sum(sum(s.get("timeouts", {}).values()) for s in node_summaries.values()),
        "catchups": sum(s.get("catchups", 0) for s in node_summaries.values()),
        "rejoined_nodes": sorted(i for i, s in node_summaries.items() if s.get("rejoined")),
        "tracker_sum_error": tracker_sum_error(payloads, get_algorithm(settings.algorithm).tracker),
        "rounds_skipped": sum(rounds_skipped(d) for d in state_dirs.values()),
        "longest_wait_s": max((s.get("max_wait_s", 0.0) for s in node_summaries.values()), default=0.0),
    }
    if isinstance(task, ImageTask):
        accs = [s.get("test_accuracy") for s in node_summaries.values()]
        if accs and all(a is not None for a in accs):
            summary["mean_test_accuracy"] = sum(accs) / len(accs)
        averaged = X.mean(dim=0, keepdim=True)
        # Every test sample, as the nodes' and the simulator's last evaluations.
        summary["averaged_model_test_accuracy"] = float(task.accuracy(averaged, "test", 0)[0])
        rounds = summary["rounds"]
        train_time = records_span(state_dirs)
        if train_time > 0:
            summary["samples_per_second"] = rounds * topology.n * settings.batch_size / train_time
    elif ev is not None:
        summary["distance_to_optimum"] = ev["distance_to_optimum"]
    summary.update(round_time_split(state_dirs))
    return summary


def rounds_skipped(state_dir: Path) -> int:
    """Local steps a node never took: rounds jumped over when it rejoined (from its checkpoint's round to its
    neighbours') or caught up after a stall."""
    skipped = 0
    for r in read_jsonl(state_dir / "metrics.jsonl"):
        if r.get("event") == "start" and r.get("rejoined"):
            skipped += int(r["round"]) - int(r.get("resumed_from", r["round"]))
        elif r.get("event") == "catchup":
            skipped += int(r["to"]) - int(r["round"])
    return skipped


def records_span(state_dirs: dict[int, Path], end_events: tuple[str, ...] = ("round",)) -> float:
    """Seconds from the first node's start record to the last node's last ``end_events`` record (0 without
    records; a node without a metrics file is skipped)."""
    starts: list[float] = []
    ends: list[float] = []
    for d in state_dirs.values():
        path = d / "metrics.jsonl"
        recs = read_jsonl(path) if path.is_file() else []
        starts += [float(r["time"]) for r in recs if r.get("event") == "start" and "time" in r][:1]
        ends += [float(r["time"]) for r in recs if r.get("event") in end_events and "time" in r][-1:]
    return max(ends) - min(starts) if starts and ends else 0.0


def round_time_split(state_dirs: dict[int, Path]) -> dict[str, float]:
    """Mean seconds per round spent computing, waiting for neighbours and mixing (over nodes and rounds)."""
    totals = {"compute_s": 0.0, "wait_s": 0.0, "mix_s": 0.0}
    count = 0
    for d in state_dirs.values():
        for r in read_jsonl(d / "metrics.jsonl"):
            if r.get("event") == "round":
                count += 1
                for k in totals:
                    totals[k] += float(r.get(k) or 0.0)
    return {f"round_{k}": v / count for k, v in totals.items()} if count else {}


#: The evaluation metric curves.png shows beside the loss, per task: (record key, axis label, title, log scale).
_EVAL_PANELS = (("test_accuracy", "test accuracy", "test accuracy (own model)", False),
                ("distance_to_optimum", "‖x_i − x*‖ / ‖x*‖", "distance to the optimum (own model)", True))


def plot_run(state_dirs: dict[int, Path], path: Path) -> Path:
    """PNG of each node's training loss against rounds, beside its test accuracy (image tasks) or its distance to
    the optimum (quadratic); only the loss when the nodes recorded neither."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = {i: read_jsonl(d / "metrics.jsonl") for i, d in sorted(state_dirs.items())}
    evals = {i: [r for r in recs if r.get("event") == "eval"] for i, recs in records.items()}
    panel = next((p for p in _EVAL_PANELS if any(r.get(p[0]) is not None for e in evals.values() for r in e)), None)
    fig, axes = plt.subplots(1, 2 if panel else 1, figsize=(11 if panel else 6, 4), squeeze=False)
    ax_loss = axes[0][0]
    for node_id, recs in records.items():
        rounds = [r for r in recs if r.get("event") == "round"]
        ax_loss.plot([r["round"] for r in rounds], [r["loss"] for r in rounds], lw=0.8, label=f"node {node_id}")
    ax_loss.set(xlabel="round", ylabel="mini-batch loss", title="training loss")
    ax_loss.set_yscale("log")
    if panel is not None:
        key, ylabel, title, logy = panel
        ax = axes[0][1]
        for node_id, node_evals in evals.items():
            shown = [r for r in node_evals if r.get(key) is not None]
            if shown:
                ax.plot([r["round"] for r in shown], [r[key] for r in shown], marker="o", ms=3, lw=1,
                        label=f"node {node_id}")
        ax.set(xlabel="round", ylabel=ylabel, title=title)
        if logy:
            ax.set_yscale("log")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
