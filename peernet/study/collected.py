"""Merge a daemon run directory gathered from hosts (run.toml, topology.toml, nodes/node<id>/) into one summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peernet.config import load_run_settings, resolve_topology
from peernet.errors import ConfigError

SUMMARY_FILE = "summary.json"
LAYOUT = "run.toml, topology.toml and nodes/node<id>/{metrics.jsonl,summary.json,checkpoint.pt}"


def merge_run_dir(run_dir: str | Path, *, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Write ``run_dir/summary.json`` from the nodes' checkpoints and summaries, and return it.

    The keys are ``merge_run``'s (those of ``peernet local --json``) plus ``final_rounds``: each node's last
    round, or None for a node without a summary yet (still running, or killed). ``data_dir`` overrides the run
    settings' ``data_dir``, which names a directory on the hosts, for the averaged model's test accuracy here.
    """
    from peernet.node.checkpoint import CHECKPOINT_NAME
    from peernet.node.results import merge_run, records_span

    base = Path(run_dir)
    run_file = base / "run.toml"
    if not run_file.is_file():
        raise ConfigError(f"no run.toml here: merging needs a daemon run directory ({LAYOUT})", file=str(base))
    overrides = {"data_dir": str(Path(data_dir).resolve())} if data_dir is not None else None
    settings = load_run_settings(run_file, overrides)
    topology = resolve_topology(settings, key_files=False)
    state_dirs = {i: base / "nodes" / f"node{i}" for i in topology.ids}
    missing = [i for i, d in state_dirs.items() if not (d / CHECKPOINT_NAME).is_file()]
    if missing:
        raise ConfigError(f"no {CHECKPOINT_NAME} for node(s) {missing} under nodes/node<id>/: collect every node's "
                          f"state first ({LAYOUT})", file=str(base))
    # A collected run has no launcher that timed it: the nodes' own records, start to exit, are the clock.
    summary = merge_run(settings, topology, state_dirs, records_span(state_dirs, ("round", "exit")))
    finals: dict[str, int | None] = {}
    for i, d in state_dirs.items():
        node_summary = d / SUMMARY_FILE
        finals[str(i)] = json.loads(node_summary.read_text()).get("final_round") if node_summary.is_file() else None
    summary["final_rounds"] = finals
    (base / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
