"""Scaling: simulator time per round at 8-256 nodes (MLP) and daemon clusters of 4-32 processes on this machine."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from typing import Any

from peernet.config import RunSettings

SIM_NODES = (8, 32, 128, 256)
DAEMON_NODES = (4, 8, 16, 32)


def sim_one(nodes: int, rounds: int) -> dict[str, Any]:
    """One simulator size in this process (run in a child, so its peak memory is its own)."""
    import torch

    from bench.sim import sim_throughput

    torch.set_num_threads(1)
    row = sim_throughput(RunSettings(model="mlp", nodes=nodes, topology="ring", batch_size=100), "vectorized",
                         rounds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**row, "rss_mb": peak, "rss_mb_per_node": peak / nodes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=20, help="timed rounds per measurement")
    p.add_argument("--sim-one", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.sim_one:
        print(json.dumps(sim_one(args.sim_one, args.rounds)))
        return
    from bench.sim import cluster_throughput

    sim_rows = []
    for n in SIM_NODES:
        res = subprocess.run([sys.executable, "-m", "bench.scale", "--sim-one", str(n), "--rounds", str(args.rounds)],
                             capture_output=True, text=True, timeout=1800)
        if res.returncode != 0:
            raise SystemExit(f"simulator at {n} nodes failed:\n{res.stderr[-2000:]}")
        sim_rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"simulator {n} nodes: {sim_rows[-1]['ms_per_round']:.1f} ms/round", file=sys.stderr)
    daemon_rows = []
    for n in DAEMON_NODES:
        row = cluster_throughput(RunSettings(model="mlp", nodes=n, topology="ring", batch_size=100), args.rounds * 2)
        row["ms_per_round"] = 1000 * (row["compute_s"] + row["wait_s"] + row["mix_s"])
        daemon_rows.append(row)
        print(f"daemons {n}: {row['ms_per_round']:.1f} ms/round, {row['rss_mb_per_node']:.0f} MB/node", file=sys.stderr)
    out = {"simulator": sim_rows, "daemons": daemon_rows}
    print(json.dumps(out, indent=2) if args.json else out)


if __name__ == "__main__":
    main()
