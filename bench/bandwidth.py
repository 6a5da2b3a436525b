"""Time to an accuracy on 20 Mbit/s links, with and without compression: the node/chaos/bandwidth-20mbit*.toml runs.

Each scenario is the reference run (8 LeNet-GN daemons on Fashion-MNIST, Momentum Tracking, ring, k = 2) with
every process in its own network namespace and its outgoing traffic limited by tc tbf; ``peernet chaos`` runs
it (root, iproute2, nftables). From the nodes' metrics: the first evaluation at which the nodes' mean test
accuracy reaches the target, the wall time from the first round to that round (the slowest node's), the bytes
the nodes sent until then, and the final accuracy on the full test set.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.daemons import spread
from peernet.metrics.jsonl import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("bandwidth-20mbit", "bandwidth-20mbit-fp16", "bandwidth-20mbit-topk")


def _node_records(run_dir: Path) -> dict[int, list[dict[str, Any]]]:
    return {int(d.name.removeprefix("node")): read_jsonl(d / "metrics.jsonl")
            for d in sorted((run_dir / "nodes").glob("node*")) if (d / "metrics.jsonl").exists()}


def time_to(run_dir: Path, target: float) -> dict[str, Any]:
    """Round, seconds and megabytes sent (all nodes) until the nodes' mean test accuracy first reached ``target``."""
    nodes = _node_records(run_dir)
    evals: dict[int, list[float]] = {}
    rounds: dict[int, dict[int, dict[str, Any]]] = {}
    for node, records in nodes.items():
        for r in records:
            if r.get("event") == "eval" and r.get("test_accuracy") is not None:
                evals.setdefault(int(r["round"]), []).append(float(r["test_accuracy"]))
            elif r.get("event") == "round":
                rounds.setdefault(node, {})[int(r["round"])] = r
    start = min(by_round[min(by_round)]["time"] for by_round in rounds.values())
    reached = next((rnd for rnd, accs in sorted(evals.items())
                    if len(accs) == len(nodes) and sum(accs) / len(accs) >= target), None)
    out: dict[str, Any] = {"target": target, "round": reached}
    if reached is not None:
        out["seconds"] = max(by_round[reached]["time"] for by_round in rounds.values()) - start
        out["megabytes_sent"] = sum(by_round[reached]["bytes_out"] for by_round in rounds.values()) / 1e6
    last = max(evals)
    out["final_round"], out["final_accuracy"] = last, sum(evals[last]) / len(evals[last])
    return out


def run(scenario: str, out: Path, target: float) -> dict[str, Any]:
    """``peernet chaos`` on one scenario file, then its figures."""
    cmd = [sys.executable, "-m", "peernet", "chaos", str(ROOT / "node" / "chaos" / f"{scenario}.toml"),
           "--out", str(out), "--quiet", "--force"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{scenario}: peernet chaos exited {done.returncode}:\n{done.stderr[-2000:]}")
    return {"scenario": scenario, **time_to(out, target)}


def _spread(values: list[float]) -> dict[str, float] | None:
    return spread(values) if values else None  # None: no repetition reached the target


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One scenario's repetitions: how many reached the target, min/median/max of each figure."""
    reached = [r for r in runs if r["round"] is not None]
    return {"scenario": runs[0]["scenario"], "repetitions": len(runs), "reached": len(reached),
            **{key: _spread([float(r[key]) for r in reached]) for key in ("round", "seconds", "megabytes_sent")},
            "final_accuracy": _spread([float(r["final_accuracy"]) for r in runs]), "runs": runs}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bandwidth", description=__doc__)
    p.add_argument("--target", type=float, default=0.7, help="mean test accuracy to reach (default 0.7)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--repeat", type=int, default=3, help="runs of each scenario, taking turns (default 3)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    names = [name for name in args.scenarios.split(",") if name]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="peernet-bandwidth-") as tmp:
        for k in range(args.repeat):
            for name in names:  # taking turns, so a slow spell of the machine hits every scenario alike
                runs[name].append(run(name, Path(tmp) / f"{name}-{k}", args.target))
    result = {"target": args.target, "rate": "20mbit", "results": [summarise(r) for r in runs.values()]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for row in result["results"]:
        print(json.dumps({k: v for k, v in row.items() if k != "runs"}))


if __name__ == "__main__":
    main()
