"""Simulator scaling: time per round and memory per node for 8 to 4,096 MLP nodes on a ring and an exponential graph.

Each size runs in a child process, so its peak resident memory is its own. Per-node time is the median
round divided by the nodes; linear scaling means it stays flat as the node count grows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

SIZES = (8, 64, 512, 4096)
KINDS = ("ring", "exponential")
#: Timed rounds per size: enough that a round's spread is small, few enough that 4,096 nodes fit in minutes.
ROUNDS = {8: 100, 64: 30, 512: 8, 4096: 3}


def sim_one(model: str, nodes: int, kind: str, rounds: int, mode: str = "auto") -> dict[str, Any]:
    """One simulator size in this process (default threads, as a user gets them)."""
    from bench.sim import sim_rounds
    from peernet.config import RunSettings
    from peernet.core.topology import generate
    from peernet.metrics.memory import peak_rss_mb

    dataset = "quadratic" if model == "quadratic" else "fashion-mnist"
    settings = RunSettings(model="mlp" if dataset == "quadratic" else model, dataset=dataset, nodes=nodes,
                           topology=kind, batch_size=100)
    row = sim_rounds(settings, mode, 0, rounds, kind)
    degree = generate(kind, nodes).degree_range()[1]
    peak = peak_rss_mb()
    return {**row, "model": model, "degree": degree, "rss_mb": peak, "rss_mb_per_node": peak / nodes,
            "per_node_ms": row["median_ms"] / nodes}


def _child(model: str, nodes: int, kind: str, rounds: int, mode: str = "auto") -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-m", "bench.scale", "--sim-one", model, str(nodes), kind, str(rounds),
                          mode], capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        raise SystemExit(f"simulator {model} at {nodes} nodes ({kind}, {mode}) failed:\n{res.stderr[-2000:]}")
    row: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"simulator {model} {kind} {nodes} nodes ({row['mode']}): {row['median_ms']:.1f} ms/round, "
          f"{row['per_node_ms']:.3f} ms/node, {row['rss_mb_per_node']:.1f} MB/node", file=sys.stderr)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sim-one", nargs=5, default=None, help=argparse.SUPPRESS)
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="node counts, comma-separated")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.sim_one:
        model, nodes, kind, rounds, mode = args.sim_one
        print(json.dumps(sim_one(model, int(nodes), kind, int(rounds), mode)))
        return
    rows = [_child("mlp", n, kind, ROUNDS.get(n, 5)) for kind in KINDS for n in map(int, args.sizes.split(","))]
    lenet = [_child("lenet", 8, "ring", 30), _child("lenet", 1024, "ring", 3)]
    # The default against the other mode where the choice is closest (the LeNet case is in bench.sim).
    modes = [_child("mlp", 64, "ring", 30), _child("mlp", 64, "ring", 30, "vectorized"),
             _child("quadratic", 1024, "exponential", 100), _child("quadratic", 1024, "exponential", 100, "loop")]
    out = {"simulator": rows, "lenet": lenet, "modes": modes}
    print(json.dumps(out, indent=2) if args.json else out)


if __name__ == "__main__":
    main()
