"""Run every benchmark, print one table and write docs/performance.md (`bash bench/run.sh`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _run_json(module: str, *args: str) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-m", module, "--json", *args], capture_output=True, text=True,
                         cwd=ROOT, timeout=3600)
    if res.returncode != 0:
        raise SystemExit(f"{module} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout)


def render(wire: dict[str, Any], sim: dict[str, Any], elapsed: float) -> str:
    m = wire["machine"]
    lines = [
        "# Performance",
        "",
        "Produced by `bash bench/run.sh` (which runs `python -m bench.wire`, `python -m bench.sim` and "
        "`python -m bench.scale`) on "
        f"{time.strftime('%Y-%m-%d')}, in {elapsed / 60:.1f} minutes. Machine: {m['cpu']}, {m['cores']} cores, "
        f"Python {m['python']}, torch {m['torch']}, pyzmq {m['pyzmq']}, libzmq {m['libzmq']}. "
        "Every comparison is a ratio of two figures measured in the same run; the absolute numbers move "
        "with the machine's load.",
        "",
        "## Wire throughput (one direction, two processes on loopback)",
        "",
        "peernet: the tensor as ≈1 MiB frames of one multipart message sent without copying, received and "
        "copied into a preallocated tensor. Raw pyzmq: one frame, default copies, copied into the same kind "
        "of tensor. gloo: `torch.distributed` send/recv into a preallocated tensor. MB = 10⁶ bytes.",
        "",
        "| method | size | GB/s (median) | min | max | vs gloo |",
        "|---|---|---|---|---|---|",
    ]
    for row in wire["results"]:
        vs = f"{row['vs_gloo']:.2f}×" if row["vs_gloo"] else "–"
        lines.append(f"| {row['method']} | {row['size_mb']} MB | {row['gbps_median']:.2f} | "
                     f"{row['gbps_min']:.2f} | {row['gbps_max']:.2f} | {vs} |")
    lines += _curve_note(wire["results"])
    vec, loop, loop1, dae = sim["vectorized"], sim["loop"], sim["loop_1thread"], sim["daemons"]
    lines += [
        "",
        "## Training throughput, 8 LeNet-GN nodes on Fashion-MNIST (batch 100 per node, ring)",
        "",
        "| what | samples/s | ms per round | ratio |",
        "|---|---|---|---|",
        f"| simulator, vectorised (all cores) | {vec['samples_per_s']:.0f} | {vec['ms_per_round']:.1f} | "
        f"{vec['samples_per_s'] / loop['samples_per_s']:.2f}× the per-node loop |",
        f"| simulator, per-node loop (all cores) | {loop['samples_per_s']:.0f} | {loop['ms_per_round']:.1f} | 1 |",
        f"| simulator, per-node loop (1 thread) | {loop1['samples_per_s']:.0f} | {loop1['ms_per_round']:.1f} | – |",
        f"| `peernet local`: 8 daemon processes, 1 thread each | {dae['samples_per_s']:.0f} | – | "
        f"{dae['samples_per_s'] / loop['samples_per_s']:.2f}× the per-node loop |",
        "",
        f"Per-round split in the daemons (mean over nodes and rounds): compute {1000 * dae['compute_s']:.1f} ms, "
        f"waiting for neighbours {1000 * dae['wait_s']:.1f} ms, mixing {1000 * dae['mix_s']:.2f} ms. "
        f"Peak resident memory per daemon: {dae['rss_mb_per_node']:.0f} MB (each loads the full dataset "
        "to derive its own shard).",
        "",
    ]
    return "\n".join(lines)


def _curve_note(rows: list[dict[str, Any]]) -> list[str]:
    """What CURVE costs, when the wire run measured it (older result files have no peernet-curve row)."""
    plain = {row["size_mb"]: row["gbps_median"] for row in rows if row["method"] == "peernet"}
    curve = {row["size_mb"]: row["gbps_median"] for row in rows if row["method"] == "peernet-curve"}
    shared = sorted(set(plain) & set(curve))
    if not shared:
        return []
    ratios = ", ".join(f"{curve[size] / plain[size]:.2f}× at {size} MB" for size in shared)
    return ["", "peernet-curve is the same transport with CURVE on both ends (every frame encrypted and "
            "authenticated, the receiver's ZAP allowlist holding the sender's key), as `peernet local` and the "
            f"reference cluster run by default. Its throughput relative to plain peernet: {ratios}."]


def render_scale(scale: dict[str, Any]) -> str:
    lines = ["", "## Scaling on this machine (`python -m bench.scale`)", "",
             "Simulator: MLP on Fashion-MNIST, ring, batch 100 per node, vectorised over nodes, one torch thread, "
             "one process per size (resident memory is that process's peak, divided by the nodes). Daemons: "
             "`peernet local` with the MLP, one process per node, CURVE on, all sharing the 2 cores; time per "
             "round is each node's compute + waiting + mixing, averaged; memory is each daemon's own peak.", "",
             "| what | nodes | ms per round | vs smallest | resident MB per node |", "|---|---|---|---|---|"]
    for key, label in (("simulator", "simulator"), ("daemons", "daemons")):
        rows = scale[key]
        base = rows[0]["ms_per_round"]
        for row in rows:
            lines.append(f"| {label} | {row['nodes']} | {row['ms_per_round']:.1f} | {row['ms_per_round'] / base:.2f}x "
                         f"| {row['rss_mb_per_node']:.0f} |")
    lines += ["", "On 2 cores every daemon beyond the second only adds contention: per-round time grows with the "
              "process count by design of this test, not because of the protocol.", ""]
    return "\n".join(lines)


def main() -> None:
    start = time.perf_counter()
    print("wire benchmark (about 1 minute) ...", file=sys.stderr)
    wire = _run_json("bench.wire")
    print("training throughput benchmark (a few minutes) ...", file=sys.stderr)
    sim = _run_json("bench.sim")
    print("scaling benchmark (several minutes) ...", file=sys.stderr)
    scale = _run_json("bench.scale")
    text = render(wire, sim, time.perf_counter() - start) + render_scale(scale)
    (ROOT / "docs" / "performance.md").write_text(text)
    (ROOT / "docs" / "performance.json").write_text(json.dumps({"wire": wire, "sim": sim, "scale": scale}, indent=2)
                                                   + "\n")
    print(text)


if __name__ == "__main__":
    main()
