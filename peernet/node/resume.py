"""Continuing a stopped `peernet local` run: is there one to continue, and can it continue bit-exactly?"""

from __future__ import annotations

from pathlib import Path

from peernet.config import RunSettings, load_run_settings, resolve_topology, run_fingerprint
from peernet.errors import CheckpointError, RunDirError
from peernet.node.checkpoint import load_checkpoint
from peernet.rundir import SETTINGS_NAME

#: What ``prepare`` writes into a run directory: without any of them there is no run to continue.
RUN_FILES = ("run.toml", "topology.toml", "bootstrap.toml", SETTINGS_NAME)


def resumable_settings(run_dir: Path) -> RunSettings:
    """The settings of the stopped run in ``run_dir`` (its run.toml, as its nodes read it); RunDirError if it is
    not a `peernet local` run directory or its run finished."""
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        raise RunDirError(f"{run_dir} is not a run directory of `peernet local` (no {', '.join(missing)}): nothing "
                          "to resume")
    if (run_dir / "summary.json").is_file():
        raise RunDirError(f"{run_dir}: the run finished (summary.json): nothing to resume")
    return load_run_settings(run_dir / "run.toml")


def checkpoint_states(run_dir: Path, settings: RunSettings) -> dict[int, tuple[str, int]]:
    """Per node: ("clean", round) for a checkpoint written at a clean stop, ("periodic", round) for one written
    during the run (the node stopped abruptly: it rejoins), ("none", 0) without one (it starts at round 0)."""
    topology = resolve_topology(settings, key_files=False)
    run = run_fingerprint(settings, topology)
    states: dict[int, tuple[str, int]] = {}
    for i in topology.ids:
        state_dir = run_dir / "nodes" / f"node{i}"
        try:
            ckpt = load_checkpoint(state_dir, node_id=i, run=run)
        except CheckpointError as exc:
            raise RunDirError(f"cannot resume: {exc}") from None
        if ckpt is None:
            states[i] = ("none", 0)
        else:
            states[i] = ("clean" if ckpt.extra.get("clean") else "periodic", ckpt.round)
    return states


def describe_states(states: dict[int, tuple[str, int]]) -> list[str]:
    """One line on where the nodes continue, and one per node whose continuation cannot be bit-exact."""
    rounds = sorted({r for _, r in states.values()})
    span = f"round {rounds[0]}" if len(rounds) == 1 else f"rounds {rounds[0]} to {rounds[-1]}"
    lines = [f"resuming {len(states)} nodes from their checkpoints ({span})"]
    for i, (kind, r) in sorted(states.items()):
        if kind == "periodic":
            lines.append(f"warning: node {i} did not stop cleanly (its checkpoint is the periodic one of round {r}): "
                         "it rejoins its neighbours, and the run no longer continues bit-exactly")
        elif kind == "none" and rounds[-1] > 1:
            lines.append(f"warning: node {i} has no checkpoint: it starts at round 0 while others are further on")
    return lines
