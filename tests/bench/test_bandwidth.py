"""bench.bandwidth's reading of a chaos run: the first evaluation at the target, its time and bytes."""

from __future__ import annotations

import json
from pathlib import Path

from bench.bandwidth import summarise, time_to


def _node(run: Path, node: int, accuracies: dict[int, float], start: float) -> None:
    d = run / "nodes" / f"node{node}"
    d.mkdir(parents=True)
    records = [{"event": "round", "round": r, "time": start + r * (1 + node), "bytes_out": 1000 * r}
               for r in range(1, 31)]
    records += [{"event": "eval", "round": r, "test_accuracy": a} for r, a in accuracies.items()]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_slowest_node_at_the_first_round_whose_mean_reaches_the_target(tmp_path: Path) -> None:
    _node(tmp_path, 0, {10: 0.6, 20: 0.75, 30: 0.8}, start=100.0)
    _node(tmp_path, 1, {10: 0.7, 20: 0.66, 30: 0.8}, start=100.5)  # the mean reaches 0.7 at round 20, not 10
    got = time_to(tmp_path, 0.7)
    assert got["round"] == 20
    assert got["seconds"] == (100.5 + 20 * 2) - (100.0 + 1)  # node 1's round 20, from the first round anywhere
    assert got["megabytes_sent"] == 2 * 20_000 / 1e6
    assert got["final_round"] == 30 and abs(got["final_accuracy"] - 0.8) < 1e-12
    assert time_to(tmp_path, 0.9)["round"] is None
    row = summarise([{"scenario": "s", **got}, {"scenario": "s", **time_to(tmp_path, 0.9)}])
    assert row["reached"] == 1 and row["repetitions"] == 2 and row["seconds"]["median"] == got["seconds"]
