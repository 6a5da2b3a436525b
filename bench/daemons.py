"""Lean daemons: peak memory per LeNet daemon, per-round overhead, and 64 daemons on one machine, before and after.

The reference cluster (node/run.toml: 8-node ring, Momentum Tracking, LeNet-GN, CURVE) runs with ``peernet
local`` at this tree and at ``--before REF`` (a git worktree), alternating, so every ratio compares two
figures measured in the same run. Per-round times come from the nodes' own metrics: the time between two
consecutive round records, and the compute, wait and mix each record reports.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from peernet.metrics.jsonl import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
#: The tree the issue measured (before the lean data path and the clone-free round).
BEFORE_REF = "350ba72"


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def bare_torch_rss_mb() -> float:
    """Peak RSS of a process that only imports torch (the floor any PyTorch daemon starts from)."""
    code = "import resource, torch; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(res.stdout.strip())


def node_round_figures(state_dir: Path) -> dict[str, float]:
    """One node's median ms per round (from consecutive round timestamps) and the part outside compute, wait and
    mix (the issue's definition: it includes evaluations and checkpoints)."""
    rounds = [r for r in read_jsonl(state_dir / "metrics.jsonl") if r.get("event") == "round"]
    gaps, outside = [], []
    for prev, rec in itertools.pairwise(rounds):
        gap = rec["time"] - prev["time"]
        gaps.append(gap)
        outside.append(gap - rec["compute_s"] - rec["wait_s"] - rec["mix_s"])
    return {"round_ms": 1000 * statistics.fmean(gaps), "outside_ms": 1000 * statistics.fmean(outside)}


class MemorySampler:
    """The machine's lowest MemAvailable while a run goes on (how much of the machine the daemons took)."""

    def __init__(self) -> None:
        self.lowest_kb = self._available_kb()
        self.start_kb = self.lowest_kb
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _available_kb() -> int:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
        return 0

    def _loop(self) -> None:
        while not self._done.wait(0.2):
            self.lowest_kb = min(self.lowest_kb, self._available_kb())

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def used_gb(self) -> float:
        return (self.start_kb - self.lowest_kb) / 2**20


def local_run(tree: Path, nodes: int, rounds: int | None) -> dict[str, Any]:
    """One `peernet local` of the reference configuration at ``tree``; its per-node figures."""
    out = Path(tempfile.mkdtemp(prefix="peernet-daemons-"))
    args = [sys.executable, "-m", "peernet", "local", "--config", str(ROOT / "node" / "run.toml"), "--quiet",
            "--json", "--out", str(out / "run"), "--nodes", str(nodes)]
    if rounds is not None:
        args += ["--rounds", str(rounds)]
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    try:
        with MemorySampler() as mem:
            res = subprocess.run(args, capture_output=True, text=True, cwd=tree, timeout=3600, env=env)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            raise RuntimeError(f"peernet local ({tree}) failed:\n{res.stderr[-3000:]}")
        dirs = sorted((out / "run" / "nodes").iterdir())
        summaries = [json.loads((d / "summary.json").read_text()) for d in dirs]
        figures = [node_round_figures(d) for d in dirs]
        row: dict[str, Any] = {
            "wall_s": wall, "machine_memory_used_gb": mem.used_gb,
            "rss_mb": [s["max_rss_mb"] for s in summaries],
            "round_ms": statistics.median(f["round_ms"] for f in figures),
            "outside_ms": statistics.median(f["outside_ms"] for f in figures),
            "accuracy": json.loads(res.stdout.strip().splitlines()[-1]).get("mean_test_accuracy"),
        }
        if "overhead_ms" in summaries[0]:  # the summary of the tree before this benchmark has no such figure
            row["overhead_ms"] = statistics.median(s["overhead_ms"]["median"] for s in summaries)
            row["overhead_cpu_ms"] = statistics.median(s["overhead_cpu_ms"]["median"] for s in summaries)
        return row
    finally:
        subprocess.run(["rm", "-rf", str(out)], check=False)


def compare(before: Path, repeats: int, rounds: int) -> dict[str, Any]:
    """The 8-daemon reference cluster at both trees, alternating, ``repeats`` times each."""
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    order = [("before", before), ("after", ROOT)]
    for k in range(repeats):
        for label, tree in order if k % 2 == 0 else order[::-1]:  # ABBA: neither tree always runs second
            runs[label].append(local_run(tree, 8, rounds))
    ratios = [a["round_ms"] / b["round_ms"] for a, b in zip(runs["after"], runs["before"], strict=True)]
    out: dict[str, Any] = {"repeats": repeats, "rounds": rounds, "round_ratio": spread(ratios)}
    for label, rows in runs.items():
        out[label] = {k: spread([r[k] for r in rows]) for k in ("round_ms", "outside_ms", "wall_s")}
        out[label]["rss_mb"] = spread([max(r["rss_mb"]) for r in rows])
        out[label]["accuracy"] = rows[-1]["accuracy"]
        for key in ("overhead_ms", "overhead_cpu_ms"):
            if key in rows[0]:
                out[label][key] = spread([r[key] for r in rows])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", action="store_true", help="print the figures as JSON (for bench/run.py)")
    p.add_argument("--before", default=BEFORE_REF, help="git revision to compare with")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=200, help="rounds per 8-daemon run")
    p.add_argument("--big", type=int, default=64, help="daemons in the one-machine run (0: skip)")
    args = p.parse_args()
    old = Path(tempfile.mkdtemp(prefix="peernet-before-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.before],
                   check=True, capture_output=True)
    try:
        result: dict[str, Any] = {"before_ref": args.before, "bare_torch_rss_mb": bare_torch_rss_mb(),
                                  "cores": os.cpu_count()}
        result["eight"] = compare(old, args.repeats, args.rounds)
        if args.big:
            result["big"] = {"nodes": args.big, **local_run(ROOT, args.big, None)}
            result["big"]["rss_mb"] = spread(result["big"]["rss_mb"])
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
    result["self_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()


def render(data: dict[str, Any]) -> list[str]:
    """The "Lean daemons" section of docs/performance.md."""
    eight, before, after = data["eight"], data["eight"]["before"], data["eight"]["after"]

    def row(name: str, fig: dict[str, Any], unit: str = "") -> str:
        return f"| {name} | {fig['median']:.2f}{unit} | {fig['min']:.2f} | {fig['max']:.2f} |"

    lines = ["", "## Lean daemons (`python -m bench.daemons`)", "",
             f"Measured {data['date']}. The reference cluster (`node/run.toml`: 8-node ring, Momentum Tracking, "
             f"LeNet-GN, CURVE, evaluation every 60 rounds on 2,000 samples) for {eight['rounds']} rounds with "
             f"`peernet local`, at this tree and at `{data['before_ref']}` (before the lean data path and the "
             f"clone-free round), alternating which goes first, {eight['repeats']} runs each, on {data['cores']} "
             "cores. Per-round "
             "figures are each node's mean from its metrics (time between consecutive round records), median over "
             "the nodes; the table gives min / median / max over the runs.", "",
             "| figure | median | min | max |", "|---|---|---|---|",
             row(f"peak RSS per daemon, before (MB; bare `import torch`: {data['bare_torch_rss_mb']:.0f})",
                 before["rss_mb"]),
             row("peak RSS per daemon, after (MB)", after["rss_mb"]),
             row("ms per round, before", before["round_ms"]), row("ms per round, after", after["round_ms"]),
             row("round after ÷ before (paired runs)", eight["round_ratio"], "×"),
             row("ms per round outside compute + wait + mix, before (with evaluations, checkpoints)",
                 before["outside_ms"]),
             row("the same, after", after["outside_ms"]),
             row("after: overhead per round, wall ms (median round; no evaluation or checkpoint)",
                 after["overhead_ms"]),
             row("after: overhead per round, CPU ms of the daemon's thread", after["overhead_cpu_ms"]), ""]
    lines.append(f"Final mean test accuracy, same seed: before {before['accuracy']:.4f}, "
                 f"after {after['accuracy']:.4f}.")
    ratio = eight["round_ratio"]["median"]
    verdict = "met" if ratio <= 0.85 else "not met"
    lines += ["", "Reading the round figures: 8 daemons share 2 cores, so a round takes the CPU all of them spend "
              "on it divided by 2. Each daemon's own bookkeeping is about a millisecond of CPU per round (last "
              "row); the wall-clock overhead is several times that because a daemon that is ready to go on "
              "waits for a core, as in every other phase. The per-round copies this version removed cost about "
              "0.3 ms of CPU per round, within the run-to-run spread, so the round moved by "
              f"{ratio:.2f}× (target ≤ 0.85×: {verdict}). What is left outside compute, wait and mix is mostly "
              "the evaluation every 60 rounds and that waiting for a core."]
    big = data.get("big")
    if big:
        lines += ["", f"{big['nodes']} daemons of the reference run (`peernet local --config node/run.toml --nodes "
                  f"{big['nodes']}`, all {big['nodes']} on this machine): finished in {big['wall_s']:.0f} s, peak RSS "
                  f"per daemon {big['rss_mb']['median']:.0f} MB (max {big['rss_mb']['max']:.0f}), the machine's "
                  f"available memory fell by at most {big['machine_memory_used_gb']:.1f} GB (shared library pages "
                  f"count once there, in every process's RSS), mean test accuracy {big['accuracy']:.4f}."]
    return lines
