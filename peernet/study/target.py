"""Rounds and bytes each setting needed to reach a target accuracy, against the same setting uncompressed."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from typing import Any, Protocol

#: Settings that only say how messages are compressed: runs equal in everything else share a baseline.
COMPRESSION_KEYS = ("compression", "compression_ratio", "compression_rank", "consensus_step")


class Evaluated(Protocol):
    """What a report's run offers: its settings, summary and evaluation curve (epoch, value)."""

    settings: dict[str, Any]
    summary: dict[str, Any]
    curve: list[dict[str, float]]

    @property
    def algorithm(self) -> str: ...

    @property
    def failed(self) -> bool: ...


def rounds_to(run: Evaluated, target: float) -> int | None:
    """The round of the first evaluation at or above ``target``; None if the run never got there."""
    rounds, epochs = run.summary.get("rounds"), run.summary.get("epochs")
    if not rounds or not epochs:
        return None
    per_epoch = float(rounds) / float(epochs)
    return next((round(p["epoch"] * per_epoch) for p in run.curve if p["value"] >= target), None)


def bytes_to(run: Evaluated, target: float) -> float | None:
    """Bytes of tensor data one node sent to each neighbour until the target (round message × rounds)."""
    rounds = rounds_to(run, target)
    per_round = run.summary.get("message_bytes_per_node")
    return None if rounds is None or per_round is None else rounds * float(per_round)


def _baseline_key(run: Evaluated) -> str:
    rest = {k: v for k, v in run.settings.items() if k not in (*COMPRESSION_KEYS, "seed")}
    return json.dumps(rest, sort_keys=True, default=str)


def _label(run: Evaluated) -> str:
    name = str(run.settings.get("compression") or "none")
    extra = [f"{k.removeprefix('compression_').removeprefix('consensus_')}={run.settings[k]:g}"
             for k in COMPRESSION_KEYS[1:] if run.settings.get(k) is not None]
    return name + (f" ({', '.join(extra)})" if extra else "")


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def target_rows(runs: Sequence[Evaluated], target: float) -> list[dict[str, Any]]:
    """Per algorithm and compressor (over seeds): how many reached ``target``, the median rounds and bytes to it,
    the bytes saved against the uncompressed runs of the same setting, and the final accuracy."""
    groups: dict[tuple[str, str, str], list[Evaluated]] = {}
    for run in runs:
        if not run.failed:
            groups.setdefault((_baseline_key(run), run.algorithm, _label(run)), []).append(run)
    medians = {key: _median([b for r in members if (b := bytes_to(r, target)) is not None])
               for key, members in groups.items()}
    finals = {key: [float(r.summary["mean_test_accuracy"]) for r in members
                    if r.summary.get("mean_test_accuracy") is not None] for key, members in groups.items()}
    rows = []
    for key, members in groups.items():
        base = (key[0], key[1], "none")
        reached = [r for r in members if rounds_to(r, target) is not None]
        mine, theirs = medians[key], medians.get(base)
        saved = theirs / mine if theirs and mine else None
        final = finals[key]
        loss = (statistics.fmean(finals[base]) - statistics.fmean(final)) * 100 if finals.get(base) and final else None
        rows.append({"algorithm": key[1], "compression": key[2], "seeds": len(members), "reached": len(reached),
                     "rounds": _median([float(rounds_to(r, target) or 0) for r in reached]),
                     "megabytes": None if mine is None else mine / 1e6, "fewer_bytes": saved,
                     "final": statistics.fmean(final) * 100 if final else None,
                     "final_std": statistics.stdev(final) * 100 if len(final) > 1 else 0.0,
                     "points_lost": loss})
    return sorted(rows, key=lambda r: (r["algorithm"], r["compression"] != "none", r["compression"]))


def target_section(runs: Sequence[Evaluated], target: float) -> str:
    """Markdown: the table of :func:`target_rows`, with how it is measured."""
    rows = target_rows(runs, target)

    def num(value: float | None, fmt: str) -> str:
        return "–" if value is None else format(value, fmt)

    lines = [f"## To reach {target * 100:g}% mean test accuracy",
             f"Median over the seeds that reached it of the first evaluation at or above {target * 100:g}% (rounds) "
             "and of the tensor bytes one node sent each neighbour until then (MB); \"fewer bytes\" divides the "
             "uncompressed runs' median by this row's; final accuracy: mean ± sample std over all seeds, and the "
             "points it lost against the uncompressed runs.", "",
             "| algorithm | compression | reached | rounds | MB per neighbour | fewer bytes | final acc (%) | "
             "points lost |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fewer = num(r["fewer_bytes"], ".1f") + ("×" if r["fewer_bytes"] else "")
        lines.append(f"| {r['algorithm']} | {r['compression']} | {r['reached']}/{r['seeds']} "
                     f"| {num(r['rounds'], '.0f')} | {num(r['megabytes'], '.2f')} | {fewer} "
                     f"| {num(r['final'], '.2f')} ± {r['final_std']:.2f} | {num(r['points_lost'], '+.2f')} |")
    return "\n".join(lines)
