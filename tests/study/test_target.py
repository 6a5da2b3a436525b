"""Rounds and bytes to a target accuracy, and the saving against the same setting uncompressed."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from peernet.study.target import bytes_to, rounds_to, target_rows, target_section


@dataclasses.dataclass
class FakeRun:
    settings: dict[str, Any]
    summary: dict[str, Any]
    curve: list[dict[str, float]]
    algorithm: str = "momentum-tracking"
    failed: bool = False


def run(compression: str, seed: int, accuracies: list[float], message_bytes: float, **extra: Any) -> FakeRun:
    """A run of 3 epochs of 10 rounds, evaluated every half epoch (rounds 5, 10, ... 30)."""
    settings = {"algorithm": "momentum-tracking", "lr": 0.02, "seed": seed, "compression": compression, **extra}
    curve = [{"epoch": 0.5 * (i + 1), "value": a} for i, a in enumerate(accuracies)]
    summary = {"rounds": 30, "epochs": 3.0, "message_bytes_per_node": message_bytes,
               "mean_test_accuracy": accuracies[-1]}
    return FakeRun(settings, summary, curve)


def test_rounds_and_bytes_to_the_first_evaluation_at_the_target() -> None:
    r = run("none", 0, [0.3, 0.6, 0.7, 0.65, 0.8, 0.8], 1000.0)
    assert rounds_to(r, 0.7) == 15  # the third evaluation, at 1.5 epochs of 10 rounds
    assert bytes_to(r, 0.7) == 15_000.0
    assert rounds_to(r, 0.9) is None and bytes_to(r, 0.9) is None


def test_rows_compare_each_compressor_with_the_uncompressed_runs_of_the_same_setting() -> None:
    runs = [run("none", s, [0.5, 0.7, 0.8, 0.8, 0.8, 0.8], 1000.0) for s in range(3)]
    runs += [run("topk", s, [0.3, 0.5, 0.6, 0.7, 0.79, 0.79], 100.0, compression_ratio=0.1) for s in range(3)]
    runs += [run("randk", 0, [0.3, 0.4, 0.5, 0.5, 0.6, 0.6], 100.0, compression_ratio=0.1)]  # never reaches it
    rows = {r["compression"]: r for r in target_rows(runs, 0.7)}
    assert set(rows) == {"none", "topk (ratio=0.1)", "randk (ratio=0.1)"}
    none, topk, randk = rows["none"], rows["topk (ratio=0.1)"], rows["randk (ratio=0.1)"]
    assert (none["reached"], none["rounds"], none["megabytes"]) == (3, 10, 0.01)
    assert (topk["reached"], topk["rounds"]) == (3, 20)
    assert topk["fewer_bytes"] == pytest.approx(5.0)  # 10 rounds × 1000 B against 20 rounds × 100 B
    assert topk["points_lost"] == pytest.approx(1.0)
    assert randk["reached"] == 0 and randk["fewer_bytes"] is None and randk["megabytes"] is None
    text = target_section(runs, 0.7)
    assert "To reach 70% mean test accuracy" in text and "5.0×" in text
