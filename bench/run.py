"""Run every benchmark, print one table and write docs/performance.md (`bash bench/run.sh`)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.daemons import render as render_daemons
from bench.hostile_memory import render as render_hostile_memory

ROOT = Path(__file__).resolve().parents[1]


def _run_json(module: str, *args: str) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-m", module, "--json", *args], capture_output=True, text=True,
                         cwd=ROOT, timeout=3600)
    if res.returncode != 0:
        raise SystemExit(f"{module} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout)


def render_wire(wire: dict[str, Any]) -> list[str]:
    m = wire["machine"]
    lines = [
        "# Performance",
        "",
        "Produced by `bash bench/run.sh` (which runs `python -m bench.wire`, `python -m bench.wire_memory`, "
        "`python -m bench.hostile_memory`, "
        "`python -m bench.bigmodel`, `python -m bench.bandwidth` (root), `python -m bench.sim`, "
        "`python -m bench.scale`, `python -m bench.topology` "
        "and `python -m bench.daemons`; `--only sim,scale` reruns some sections and keeps the others' last "
        "figures, `--only ''` only rewrites this page from docs/performance.json, "
        f"each section says when it was measured). Machine: {m['cpu']}, {m['cores']} cores, "
        f"Python {m['python']}, torch {m['torch']}, pyzmq {m['pyzmq']}, libzmq {m['libzmq']}. "
        "Every comparison is a ratio of two figures measured in the same run; the absolute numbers move "
        "with the machine's load.",
        "",
        "## Wire throughput (one direction, two processes on loopback)",
        "",
        f"Measured {wire.get('date', '2026-11-26')}. "
        "peernet: the tensor as ≈1 MiB frames of one multipart message sent without copying and received the "
        "way a daemon receives a round (each frame straight into a preallocated tensor with `recv_into`). "
        "peernet-ipc: the same over `ipc://` (a Unix socket). ceiling: raw pyzmq with the fastest settings the "
        "benchmark's own search found on this machine (below). Raw pyzmq: one frame, default copies, copied into "
        "the same kind of tensor. gloo: `torch.distributed` send/recv into a preallocated tensor. MB = 10⁶ bytes; "
        f"min/median/max over {_samples(wire)} timed trials of {wire.get('args', {}).get('repeats', '?')} messages "
        "each, the methods taking turns.",
        "",
        "| method | size | GB/s (median) | min | max | vs gloo | vs ceiling |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in wire["results"]:
        vs = f"{row['vs_gloo']:.2f}×" if row["vs_gloo"] else "–"
        vc = f"{row['vs_ceiling']:.2f}×" if row.get("vs_ceiling") else "–"
        lines.append(f"| {row['method']} | {row['size_mb']} MB | {row['gbps_median']:.2f} | "
                     f"{row['gbps_min']:.2f} | {row['gbps_max']:.2f} | {vs} | {vc} |")
    lines += _curve_note(wire["results"]) + _targets(wire["results"]) + _ceiling_note(wire) + _curve_analysis(wire)
    return lines


def _targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets against this run: peernet vs gloo and vs the ceiling, over tcp and over ipc."""
    by = {(r["method"], r["size_mb"]): r for r in rows}
    sizes = sorted({r["size_mb"] for r in rows})
    parts = []
    for method in ("peernet", "peernet-ipc"):
        cells = [f"{by[method, s]['vs_gloo']:.2f}× gloo and {by[method, s]['vs_ceiling']:.2f}× the ceiling at {s} MB"
                 for s in sizes if (method, s) in by and by[method, s].get("vs_ceiling") and by[method, s]["vs_gloo"]]
        if cells:
            parts.append(f"{method}: " + ", ".join(cells))
    if not parts:
        return []
    return ["", "Against the targets (≥ 2.0× gloo, ≥ 0.9× the ceiling): " + "; ".join(parts) + ". `peernet local` "
            "uses ipc between its daemons by default (`--transport auto`)."]


def _samples(wire: dict[str, Any]) -> str:
    counts = {row.get("samples") for row in wire["results"]}
    return str(counts.pop()) if len(counts) == 1 and None not in counts else "several"


def _ceiling_note(wire: dict[str, Any]) -> list[str]:
    """How the ceiling was found: every configuration the coordinate search tried, fastest first."""
    ceiling = wire.get("ceiling") or {}
    if not ceiling:
        return []
    lines = ["", "The ceiling search (`bench/wire_ceiling.py`) starts from tcp, 1 MiB frames, `recv_into`, the "
             "kernel's socket buffers, one I/O thread and zero-copy sends, and changes one setting at a time "
             "(transport, frame size, receive style, socket buffers, I/O threads, sender copies), keeping whatever "
             "is faster, in two passes; each configuration is the median of 3 trials of 5 messages. Chosen:"]
    lines.append("")
    for size, entry in sorted(ceiling.items(), key=lambda kv: int(kv[0])):
        tried = entry["tried"]
        lines.append(f"- {size} MB: {entry['label']} ({len(tried)} configurations tried; fastest "
                     f"{tried[0]['gbps']:.2f} GB/s, slowest {tried[-1]['gbps']:.2f} GB/s in the search).")
    return lines


def _curve_analysis(wire: dict[str, Any]) -> list[str]:
    rows = wire.get("curve_analysis") or []
    if not rows:
        return []
    lines = ["", "Where CURVE's time goes (same benchmark; chunk size and libzmq I/O threads varied on both ends; "
             "CPU seconds per GB moved, whole process, I/O threads included; median of 3 runs):", "",
             "| method | chunk | I/O threads | GB/s | sender CPU s/GB | receiver CPU s/GB |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['chunk_kib']} KiB | {r['io_threads']} | {r['gbps_median']:.2f} | "
                     f"{r['sender_cpu_s_per_gb']:.2f} | {r['receiver_cpu_s_per_gb']:.2f} |")
    return lines


def render_wire_memory(mem: dict[str, Any]) -> list[str]:
    lines = ["", "## Receiving 400 MB tensors (`python -m bench.wire_memory`)", "",
             f"Measured {mem.get('date', '?')}. One receiver process gets the same tensor 20 times over loopback "
             "into one preallocated tensor; its resident memory is read after each message.", "",
             "| receive path | size | messages | RSS before | after 1st | after 2nd..last (min–max) | growth 2nd→last "
             "| GB/s |", "|---|---|---|---|---|---|---|---|"]
    for r in mem["results"]:
        rest = r["series"][1:]
        lines.append(f"| {r['path']} | {r['size_mb']} MB | {r['messages']} | {r['rss_before_mb']:.0f} MB | "
                     f"{r['rss_first_mb']:.0f} MB | {min(rest):.0f}–{max(rest):.0f} MB | "
                     f"{r['growth_from_second_mb']:+.0f} MB | {r['gbps']:.2f} |")
    return lines


def render_bigmodel(big: dict[str, Any], wire: dict[str, Any]) -> list[str]:
    plain = {row["size_mb"]: row["gbps_median"] for row in wire["results"] if row["method"] == "peernet"}
    curve = {row["size_mb"]: row["gbps_median"] for row in wire["results"] if row["method"] == "peernet-curve"}
    rate = {False: plain.get(max(plain, default=0)), True: curve.get(max(curve, default=0))}
    lines = ["", "## A big model end to end (`python -m bench.bigmodel`)", "",
             f"Measured {big.get('date', '?')}. `peernet local --transport tcp`: {big['nodes']} daemons on this "
             "machine, "
             f"{big['model']} (GroupNorm) on Fashion-MNIST, ring, Momentum Tracking, batch {big['batch_size']}, "
             f"{big['rounds']} rounds; per node and round after the first {big['skip']} (medians, seconds). "
             "'bytes ÷ wire' is the round's received bytes at the wire benchmark's median 44 MB rate for the same "
             "transport (one sender, one receiver, the machine otherwise idle).", "",
             "| transport | round | compute | wait | mix | MB out | MB in | bytes ÷ wire | wait ÷ (bytes ÷ wire) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in big["results"]:
        gbps = rate[r["curve"]]
        ideal = r["mb_in"]["median"] / 1000 / gbps if gbps else None
        ratio = f"{r['wait_s']['median'] / ideal:.1f}×" if ideal else "–"
        lines.append(f"| {'CURVE' if r['curve'] else 'plain'} | {r['round_s']['median']:.2f} | "
                     f"{r['compute_s']['median']:.2f} | {r['wait_s']['median']:.2f} | {r['mix_s']['median']:.3f} | "
                     f"{r['mb_out']['median']:.0f} | {r['mb_in']['median']:.0f} | "
                     f"{f'{ideal:.3f}' if ideal else '–'} | {ratio} |")
    return lines


def render_bandwidth(bw: dict[str, Any]) -> list[str]:
    """Time to the target accuracy on rate-limited links, with and without compression."""
    target = bw["target"] * 100
    base = next((r for r in bw["results"] if r["scenario"] == "bandwidth-20mbit"), None)
    base_s = base["seconds"]["median"] if base and base["seconds"] else None
    lines = ["", f"## Time to {target:g}% on {bw['rate']} links (`python -m bench.bandwidth`)", "",
             f"Measured {bw.get('date', '?')}. `peernet chaos node/chaos/<scenario>.toml`: the reference run (8 "
             "LeNet-GN daemons, Fashion-MNIST, ring, k = 2, Momentum Tracking, 3 epochs), every process in its own "
             f"network namespace with its outgoing traffic limited to {bw['rate']} by tc tbf. Seconds from the first "
             f"round to the first evaluation (every 15 rounds) at which the nodes' mean test accuracy reached "
             f"{target:g}%, MB all nodes sent until then, the final accuracy after 180 rounds; min / median / max of "
             "the repetitions (the scenarios taking turns). 'sooner' divides the uncompressed median time by the "
             "row's.", "",
             "| scenario | reached | round | seconds | MB sent | sooner | final acc (%) |",
             "|---|---|---|---|---|---|---|"]

    def mmm(v: dict[str, float] | None, fmt: str, scale: float = 1.0) -> str:
        return "–" if v is None else " / ".join(format(v[k] * scale, fmt) for k in ("min", "median", "max"))

    for r in bw["results"]:
        sooner = f"{base_s / r['seconds']['median']:.2f}×" if base_s and r["seconds"] else "–"
        lines.append(f"| {r['scenario']} | {r['reached']}/{r['repetitions']} | {mmm(r['round'], '.0f')} | "
                     f"{mmm(r['seconds'], '.1f')} | {mmm(r['megabytes_sent'], '.0f')} | {sooner} | "
                     f"{mmm(r['final_accuracy'], '.2f', 100.0)} |")
    return lines


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


def _ms(row: dict[str, Any]) -> str:
    return f"{row['median_ms']:.1f} | {row['min_ms']:.1f} | {row['max_ms']:.1f}"


def render_sim(sim: dict[str, Any]) -> list[str]:
    """The simulator against the floor, the daemons and the engine it replaced."""
    floor, auto = sim["floor_round_ms"], sim["auto"]
    dae, cell = sim["daemons"], sim["study_cell"]
    lines = [
        "", "## Simulator, 8 LeNet-GN nodes on Fashion-MNIST (batch 100 per node, ring, Momentum Tracking)", "",
        f"Measured {sim['date']}, {auto['n']} timed rounds per row after 5 warm-up rounds (training only). "
        f"The floor is one plain `nn.Module` LeNet-GN step (forward + backward, batch 100, one torch thread; "
        f"median {sim['floor_step']['median_ms']:.2f} ms) × 8 nodes ÷ {sim['cores']} cores = {floor:.1f} ms.", "",
        "| what | ms per round (median) | min | max | vs floor |", "|---|---|---|---|---|",
    ]
    for key, label in (("auto", "simulator, default (`auto` → per node, all cores)"),
                       ("loop_1thread", "simulator, per node, 1 thread"),
                       ("vectorized", "simulator, `--mode vectorized` (grouped convolutions)")):
        lines.append(f"| {label} | {_ms(sim[key])} | {sim[key]['median_ms'] / floor:.2f}× |")
    lines += [
        f"| the same default with another process spinning on one core | {_ms(sim['auto_loaded'])} | "
        f"{sim['auto_loaded']['median_ms'] / floor:.2f}× |",
        f"| `peernet local`, 8 daemon processes: compute per round | {dae['compute_ms']:.1f} | – | – | "
        f"{dae['compute_ms'] / floor:.2f}× |",
        "",
        f"The default simulator round is {auto['median_ms'] / floor:.2f}× the floor and "
        f"{auto['median_ms'] / dae['compute_ms']:.2f}× the daemons' compute per round (daemons: waiting "
        f"{dae['wait_ms']:.1f} ms and mixing {dae['mix_ms']:.2f} ms more per round, so a daemon round is "
        f"{dae['compute_ms'] + dae['wait_ms'] + dae['mix_ms']:.1f} ms). With another process spinning on one of "
        f"the {sim['cores']} cores the default slows by {sim['auto_loaded']['median_ms'] / auto['median_ms']:.2f}× "
        "(its threads now share the cores with a third busy thread; no collapse); a plain one-thread step on the "
        f"free core slows by {sim['floor_step_loaded']['median_ms'] / sim['floor_step']['median_ms']:.2f}×.", "",
        "Reference study cell (`peernet simulate`, LeNet, 8-node ring, k = 2, 2 epochs, val 10%, evaluation "
        "every 54 rounds on 4000 samples; whole process, import and data loading included; "
        f"{cell.get('repeats', 3)} runs each):", "",
        "| version | seconds (median) | min | max | final mean test accuracy |", "|---|---|---|---|---|",
    ]
    for label in ("before", "after"):
        row = cell[label]
        name = f"before (`{cell['before_ref']}`)" if label == "before" else "after (this engine)"
        lines.append(f"| {name} | {row['median_s']:.1f} | {row['min_s']:.1f} | {row['max_s']:.1f} | "
                     f"{row['mean_test_accuracy']:.4f} |")
    lines += ["", f"Speed-up of the cell: {cell['before']['median_s'] / cell['after']['median_s']:.2f}×.", ""]
    return lines


def render_scale(scale: dict[str, Any]) -> list[str]:
    lines = ["", "## Simulator scaling (`python -m bench.scale`)", "",
             f"Measured {scale['date']}. MLP (784-200-200-10, 199,210 parameters) on Fashion-MNIST, Momentum "
             "Tracking, batch 100 per node, the default mode and threads, one process per size (resident memory "
             "is that process's peak divided by the nodes; it includes torch and the shared dataset).", "",
             "| graph | nodes | degree | ms per round (median) | min | max | ms per node | vs 8 nodes | "
             "MB per node |", "|---|---|---|---|---|---|---|---|---|"]
    for kind in ("ring", "exponential"):
        rows = [r for r in scale["simulator"] if r["topology"] == kind and r.get("model", "mlp") == "mlp"]
        if not rows:
            continue
        base = rows[0]["per_node_ms"]
        for r in rows:
            lines.append(f"| {kind} | {r['nodes']} | {r['degree']} | {_ms(r)} | {r['per_node_ms']:.3f} | "
                         f"{r['per_node_ms'] / base:.2f}× | {r['rss_mb_per_node']:.1f} |")
    lines += _render_lenet_and_modes(scale)
    daemons = scale.get("daemons")
    if daemons:
        lines += ["", f"Daemon clusters (measured {daemons['date']}): `peernet local` with the MLP, one process "
                  "per node, CURVE on, all sharing the 2 cores.", "",
                  "| daemons | ms per round | vs smallest | resident MB per node |", "|---|---|---|---|"]
        base = daemons["rows"][0]["ms_per_round"]
        for row in daemons["rows"]:
            lines.append(f"| {row['nodes']} | {row['ms_per_round']:.1f} | {row['ms_per_round'] / base:.2f}× | "
                         f"{row['rss_mb_per_node']:.0f} |")
    return lines


def _render_lenet_and_modes(scale: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if scale.get("lenet"):
        small, big = scale["lenet"]
        lines += ["", f"LeNet-GN (44,470 parameters), ring, default mode: {small['nodes']} nodes "
                  f"{small['median_ms']:.1f} ms per round ({small['per_node_ms']:.2f} ms per node), "
                  f"{big['nodes']} nodes "
                  f"{big['median_ms']:.0f} ms per round ({big['per_node_ms']:.2f} ms per node, "
                  f"{big['per_node_ms'] / small['per_node_ms']:.2f}×), {big['rss_mb_per_node']:.2f} MB per node."]
    if scale.get("modes"):
        lines += ["", "The default mode against the other one (same run):", "",
                  "| task | nodes | graph | mode | ms per round (median) | min | max |",
                  "|---|---|---|---|---|---|---|"]
        for r in scale["modes"]:
            lines.append(f"| {r['model']} | {r['nodes']} | {r['topology']} | {r['mode']} | {_ms(r)} |")
    return lines


def _run_cell(step: dict[str, Any]) -> str:
    return f"{step['median_s']:.2f} ({step['min_s']:.2f}–{step['max_s']:.2f})"


def render_topology(topo: dict[str, Any]) -> list[str]:
    """Topology tools at 1,000 to 100,000 nodes: generate, load and check, each a fresh process."""
    lines = ["", "## Topology tools (`python -m bench.topology`)", "",
             f"Measured {topo['date']} on {topo['cores']} cores. Each step is a fresh process (Python start and "
             f"imports included), run {topo['repeats']} times: seconds as median (min–max), peak resident memory "
             "as the largest of the runs (the process's own, from wait4). generate: `peernet topology generate` "
             "(builds the graph, writes the TOML file, prints the spectral gap); load: `load_topology` (TOML parse "
             "and validation); check: what `peernet topology check --json` computes (load, degrees, diameter, "
             "spectral gap, fingerprint). Hypercubes take the next power of two (1,024, 16,384, 131,072 nodes).",
             "", "| graph | nodes | edges | generate s | load s | check s | peak MB generate / load / check | "
             "diameter | spectral gap |", "|---|---|---|---|---|---|---|---|---|"]
    for r in topo["results"]:
        peaks = " / ".join(f"{r[step]['rss_mb_max']:.0f}" for step in ("generate", "load", "check"))
        lines.append(f"| {r['kind']} | {r['nodes']:,} | {r['edges']:,} | {_run_cell(r['generate'])} | "
                     f"{_run_cell(r['load'])} | {_run_cell(r['check'])} | {peaks} | {r['check_phases']['diameter']} "
                     f"| {r['report']['spectral_gap']:.4g} |")
    largest = max(r["requested"] for r in topo["results"])
    lines += ["", "Where a check's time goes at the largest size (one instrumented run, seconds):", "",
              "| graph | nodes | file MB | read and parse | validation | diameter (BFS) | spectral gap | fingerprint |",
              "|---|---|---|---|---|---|---|---|"]
    for r in topo["results"]:
        if r["requested"] == largest:
            ph = r["check_phases"]
            lines.append(f"| {r['kind']} | {r['nodes']:,} | {ph['file_mb']:.1f} | {ph['read_s']:.2f} | "
                         f"{ph['validate_s']:.2f} | {ph['diameter_s']:.2f} ({ph['diameter_bfs']}) | "
                         f"{ph['gap_s']:.2f} | {ph['fingerprint_s']:.2f} |")
    return lines


SECTIONS = ("wire", "wire_memory", "hostile_memory", "bigmodel", "bandwidth", "sim", "scale", "topology", "daemons")


def _previous() -> dict[str, Any]:
    """The last run's figures, upgraded from the layout before sections carried their own date."""
    path = ROOT / "docs" / "performance.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    scale = data.get("scale", {})
    if "daemons" in scale and isinstance(scale["daemons"], list):
        scale["daemons"] = {"date": "2026-11-26", "rows": scale["daemons"]}
    return data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--only", default=",".join(SECTIONS), help="sections to rerun (others keep their last figures)")
    args = p.parse_args()
    only = [s for s in args.only.split(",") if s]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    data = _previous()
    today = time.strftime("%Y-%m-%d")
    for section in only:
        print(f"{section} benchmark ...", file=sys.stderr)
        result = _run_json(f"bench.{section}")
        if section == "scale" and "daemons" in data.get("scale", {}):
            result["daemons"] = data["scale"]["daemons"]  # daemon clusters are not rerun by bench.scale
        data[section] = {**result, "date": today}
    missing = [s for s in SECTIONS if s not in data or (s == "sim" and "floor_round_ms" not in data[s])]
    if missing:
        raise SystemExit(f"no figures for {', '.join(missing)}: run with --only {','.join(missing)}")
    text = "\n".join(render_wire(data["wire"]) + render_wire_memory(data["wire_memory"])
                     + render_hostile_memory(data["hostile_memory"])
                     + render_bigmodel(data["bigmodel"], data["wire"]) + render_bandwidth(data["bandwidth"])
                     + render_sim(data["sim"])
                     + render_scale(data["scale"]) + render_topology(data["topology"])
                     + render_daemons(data["daemons"])) + "\n"
    (ROOT / "docs" / "performance.md").write_text(text)
    (ROOT / "docs" / "performance.json").write_text(json.dumps(data, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
