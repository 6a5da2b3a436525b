"""Topology tools at scale: wall time and peak memory of generate, load and check, 1,000 to 100,000 nodes.

Every step runs in a fresh process, so its peak resident memory (from wait4) is its own and its time includes
Python's start and imports, as a user sees it: ``peernet topology generate KIND -n N -o FILE`` (which also
prints the spectral gap), loading the file (``load_topology``: TOML parse and validation) and ``peernet
topology check --json FILE`` (diameter, spectral gap, fingerprint; run as the same calls in a child of this
module, with the diameter as exact value or labelled bounds). Sizes a kind cannot take are replaced by the next
valid one above (hypercube: the next power of two). One more, instrumented run per file splits a check into
its phases: TOML parse, validation, diameter, spectral gap, fingerprint.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KINDS = ("ring", "torus", "hypercube", "exponential", "random")
SIZES = (1_000, 10_000, 100_000)
REPEATS = 3
ROOT = Path(__file__).resolve().parents[1]


def valid_size(kind: str, n: int) -> int:
    """The smallest size ≥ n that ``kind`` accepts (hypercube: a power of two; torus: rows × cols, both ≥ 3)."""
    from peernet.core.topology_gen import _is_torus_size

    if kind == "hypercube":
        return 1 << (n - 1).bit_length()
    if kind == "torus":
        return next(m for m in range(max(n, 9), 2 * n + 10) if _is_torus_size(m))
    return n


def _peernet() -> list[str]:
    script = Path(sys.executable).parent / "peernet"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from peernet.cli import main; main()"]


def _run(argv: list[str]) -> dict[str, Any]:
    """Run ``argv`` in a fresh process: wall seconds, its own peak RSS in MB, and its stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ROOT)
        # wait4, not Popen.wait: it reports this child's own peak RSS (RUSAGE_CHILDREN keeps the largest so far).
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{err.read()[-3000:]}")
        return {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "stdout": out.read()}


def _stats(runs: list[dict[str, Any]]) -> dict[str, float]:
    secs, rss = [r["seconds"] for r in runs], [r["rss_mb"] for r in runs]
    return {"min_s": min(secs), "median_s": statistics.median(secs), "max_s": max(secs),
            "rss_mb_min": min(rss), "rss_mb_median": statistics.median(rss), "rss_mb_max": max(rss)}


def load_one(path: str) -> dict[str, Any]:
    """Load a topology file in this process (``load_topology``: TOML parse and validation)."""
    from peernet.topology_files import load_topology

    topo = load_topology(path)
    return {"nodes": topo.n, "edges": len(topo.edges)}


def check_one(path: str) -> dict[str, Any]:
    """What ``peernet topology check --json`` reports, with the diameter as Diameter.as_json() gives it (exact,
    or labelled bounds when the search ran out of budget)."""
    from peernet.topology_files import load_topology

    topo = load_topology(path)
    lo, hi = topo.degree_range()
    return {"name": topo.name, "nodes": topo.n, "edges": len(topo.edges), "weights": topo.weights,
            "degree_range": [lo, hi], **topo.diameter_bounds().as_json(), "spectral_gap": topo.spectral_gap(),
            "fingerprint": topo.fingerprint()}


def phases_one(path: str) -> dict[str, Any]:
    """Check a topology file in this process, timing each part: reading it (the loader's own parse: the edges
    block by pattern, the rest by tomllib), validation, diameter, gap, fingerprint."""
    from peernet.topology_files import _read_toml, parse_topology

    marks = [time.perf_counter()]
    data = _read_toml(path)
    marks.append(time.perf_counter())
    topo = parse_topology(data, path)
    marks.append(time.perf_counter())
    diameter = topo.diameter_bounds()
    marks.append(time.perf_counter())
    gap = topo.spectral_gap()
    marks.append(time.perf_counter())
    topo.fingerprint()
    marks.append(time.perf_counter())
    spans = [b - a for a, b in itertools.pairwise(marks)]
    return {"read_s": spans[0], "validate_s": spans[1], "diameter_s": spans[2], "gap_s": spans[3],
            "fingerprint_s": spans[4], "file_mb": os.path.getsize(path) / 1e6, "diameter": str(diameter),
            "diameter_exact": diameter.exact, "diameter_bfs": diameter.bfs, "spectral_gap": gap}


def measure(kind: str, n: int, repeats: int, folder: Path) -> dict[str, Any]:
    """Generate, load and check one topology ``repeats`` times each, every run a fresh process."""
    size = valid_size(kind, n)
    path = str(folder / f"{kind}-{size}.toml")
    me = [sys.executable, "-m", "bench.topology"]
    steps = {
        "generate": [*_peernet(), "topology", "generate", kind, "-n", str(size), "-o", path],
        "load": [*me, "--load-one", path],
        "check": [*me, "--check-one", path],
    }
    row: dict[str, Any] = {"kind": kind, "requested": n, "nodes": size}
    for step, argv in steps.items():
        runs = [_run(argv) for _ in range(repeats)]
        row[step] = _stats(runs)
        if step == "check":
            row["report"] = json.loads(runs[-1]["stdout"])
    row["check_phases"] = json.loads(_run([*me, "--phases-one", path])["stdout"])
    row["edges"] = row["report"]["edges"]
    print(f"topology {kind} {size}: generate {row['generate']['median_s']:.2f} s, load {row['load']['median_s']:.2f} s,"
          f" check {row['check']['median_s']:.2f} s, peak {row['check']['rss_mb_max']:.0f} MB", file=sys.stderr)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--kinds", default=",".join(KINDS), help="graph kinds, comma-separated")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="node counts, comma-separated")
    p.add_argument("--repeats", type=int, default=REPEATS, help="fresh processes per step (min/median/max)")
    p.add_argument("--load-one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--check-one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--phases-one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load_one:
        print(json.dumps(load_one(args.load_one)))
        return
    if args.check_one:
        print(json.dumps(check_one(args.check_one)))
        return
    if args.phases_one:
        print(json.dumps(phases_one(args.phases_one)))
        return
    with tempfile.TemporaryDirectory(prefix="peernet-bench-topology-") as folder:
        rows = [measure(kind, n, args.repeats, Path(folder)) for n in map(int, args.sizes.split(","))
                for kind in args.kinds.split(",")]
    out = {"repeats": args.repeats, "cores": os.cpu_count(), "results": rows}
    print(json.dumps(out, indent=2) if args.json else out)


if __name__ == "__main__":
    main()
