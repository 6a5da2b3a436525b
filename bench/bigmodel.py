"""A big model end to end: 8 daemons training VGG-11-GN (37 MB of parameters) on this machine with `peernet local`.

Per round and node: compute, wait and mix (from each node's round records), bytes sent and received, and the
exchange time set against what the bytes would take at the wire benchmark's throughput.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.daemons import ROOT, spread
from peernet.metrics.jsonl import read_jsonl


def _records(path: Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(path) if r.get("event") == "round"]


def run(*, nodes: int, rounds: int, batch: int, curve: bool, skip: int, model: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="peernet-bigmodel-") as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "peernet", "local", "--dataset", "fashion-mnist", "--model", model,
               "--nodes", str(nodes), "--topology", "ring", "--algorithm", "momentum-tracking",
               "--rounds", str(rounds), "--batch-size", str(batch), "--eval-every", str(rounds),
               "--eval-samples", "200", "--out", str(out), "--quiet", "--json",
               "--curve" if curve else "--no-curve", "--transport", "tcp"]  # compared with the wire's tcp rows
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
        if res.returncode != 0:
            raise SystemExit(f"peernet local failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
        per_round: dict[str, list[float]] = {k: [] for k in ("round_s", "compute_s", "wait_s", "mix_s",
                                                              "mb_out", "mb_in")}
        for i in range(nodes):
            recs = _records(out / "nodes" / f"node{i}" / "metrics.jsonl")[skip:]
            for prev, rec in itertools.pairwise(recs):
                per_round["round_s"].append(rec["time"] - prev["time"])
                per_round["compute_s"].append(rec["compute_s"])
                per_round["wait_s"].append(rec["wait_s"])
                per_round["mix_s"].append(rec["mix_s"])
                per_round["mb_out"].append((rec["bytes_out"] - prev["bytes_out"]) / 1e6)
                per_round["mb_in"].append((rec["bytes_in"] - prev["bytes_in"]) / 1e6)
        return {"curve": curve, **{k: spread(v) for k, v in per_round.items()}}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bigmodel", description=__doc__)
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--rounds", type=int, default=14)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--skip", type=int, default=3, help="first rounds left out (start-up, connections)")
    p.add_argument("--model", default="vgg11")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rows = [run(nodes=args.nodes, rounds=args.rounds, batch=args.batch_size, curve=curve, skip=args.skip,
                model=args.model) for curve in (False, True)]
    result = {"model": args.model, "nodes": args.nodes, "batch_size": args.batch_size, "rounds": args.rounds,
              "skip": args.skip, "results": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for row in rows:
        print(f"{'CURVE' if row['curve'] else 'plain'}: " + ", ".join(
            f"{k} {v['median']:.3f}" for k, v in row.items() if isinstance(v, dict)))


if __name__ == "__main__":
    main()
