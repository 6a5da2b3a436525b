"""Simulator scaling: time per round and memory per node for 8 to 4,096 MLP nodes on a ring and an exponential graph.

Each size runs in a child process, so its peak resident memory is its own. Per-node time is the median
round divided by the nodes; linear scaling means it stays flat as the node count grows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from typing import Any

SIZES = (8, 64, 512, 4096)
KINDS = ("ring", "exponential")
#: Timed rounds per size: enough that a round's spread is small, few enough that 4,096 nodes fit in minutes.
ROUNDS = {8: 100, 64: 30, 512: 8, 4096: 3}


def sim_one(nodes: int, kind: str, rounds: int) -> dict[str, Any]:
    """One simulator size in this process (the default mode and threads, as a user gets them)."""
    from bench.sim import sim_rounds
    from peernet.config import RunSettings
    from peernet.core.topology import generate

    row = sim_rounds(RunSettings(model="mlp", nodes=nodes, topology=kind, batch_size=100), "auto", 0, rounds, kind)
    degree = generate(kind, nodes).degree_range()[1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**row, "degree": degree, "rss_mb": peak, "rss_mb_per_node": peak / nodes,
            "per_node_ms": row["median_ms"] / nodes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sim-one", nargs=3, default=None, help=argparse.SUPPRESS)
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="node counts, comma-separated")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.sim_one:
        nodes, kind, rounds = args.sim_one
        print(json.dumps(sim_one(int(nodes), kind, int(rounds))))
        return
    rows = []
    for kind in KINDS:
        for n in (int(s) for s in args.sizes.split(",")):
            res = subprocess.run([sys.executable, "-m", "bench.scale", "--sim-one", str(n), kind,
                                  str(ROUNDS.get(n, 5))], capture_output=True, text=True, timeout=3600)
            if res.returncode != 0:
                raise SystemExit(f"simulator at {n} nodes ({kind}) failed:\n{res.stderr[-2000:]}")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"simulator {kind} {n} nodes: {r['median_ms']:.1f} ms/round, {r['per_node_ms']:.3f} ms/node, "
                  f"{r['rss_mb_per_node']:.1f} MB/node", file=sys.stderr)
    out = {"simulator": rows}
    print(json.dumps(out, indent=2) if args.json else out)


if __name__ == "__main__":
    main()
