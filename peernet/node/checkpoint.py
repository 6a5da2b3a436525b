"""Atomic checkpoints: temp file, fsync, rename, fsync of the directory; loaded with weights_only=True.

A kill -9 at any instant leaves either the previous checkpoint or the new one, never a torn file,
because the rename is the only step that makes a new checkpoint visible. Loading uses
``torch.load(weights_only=True)``, which accepts tensors and plain containers only (no code objects),
and a checkpoint from another run or node is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from peernet.atomic import TEMP_SUFFIX, temp_prefix, write_atomic
from peernet.errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """Everything needed to continue bit-exactly: batches are a function of (seed, node, round)."""

    node_id: int
    run: str
    round: int
    params: torch.Tensor
    state: dict[str, torch.Tensor]
    extra: dict[str, Any]
    #: A clean checkpoint's last round messages as sent (round -> peer -> frames): a neighbour that stopped a
    #: round behind needs them again after a whole-cluster resume (Exchange.resend_state, docs/node.md).
    sent: dict[int, dict[int, list[bytes]]] = field(default_factory=dict)


def save_checkpoint(directory: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``directory/checkpoint.pt`` atomically and return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CHECKPOINT_NAME
    payload = {
        "format": FORMAT_VERSION,
        "node_id": ckpt.node_id,
        "run": ckpt.run,
        "round": ckpt.round,
        "params": ckpt.params.detach().cpu().clone(),
        "state": {k: v.detach().cpu().clone() for k, v in ckpt.state.items()},
        "extra": ckpt.extra,
        "sent": _frames_as_tensors(ckpt.sent),
    }
    return write_atomic(target, lambda fh: torch.save(payload, fh), mode=0o600)


def load_checkpoint(directory: str | Path, *, node_id: int, run: str) -> Checkpoint | None:
    """Load the node's latest checkpoint, or None when there is none.

    Raises CheckpointError when the file is unreadable or belongs to another node or run.
    """
    path = Path(directory) / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a peernet checkpoint of format {FORMAT_VERSION}")
    if payload.get("node_id") != node_id:
        raise CheckpointError(f"{path}: belongs to node {payload.get('node_id')}, not node {node_id}")
    if payload.get("run") != run:
        raise CheckpointError(f"{path}: belongs to run {payload.get('run')}, this run is {run}; "
                              "start with --fresh or use another state_dir")
    return Checkpoint(node_id=node_id, run=run, round=int(payload["round"]), params=payload["params"],
                      state=dict(payload["state"]), extra=dict(payload.get("extra", {})),
                      sent=_sent_frames(payload.get("sent"), path))


def _frames_as_tensors(sent: dict[int, dict[int, list[bytes]]]) -> dict[int, dict[int, list[torch.Tensor]]]:
    """Frames as uint8 tensors: stored raw (torch.save pickles bytes as latin-1 text, 1.5 times their size), and a
    frame shared by every peer's message (the payload) is one tensor object, which the pickle stores once."""
    made: dict[int, torch.Tensor] = {}

    def tensor(frame: bytes) -> torch.Tensor:
        if id(frame) not in made:
            made[id(frame)] = torch.frombuffer(bytearray(frame), dtype=torch.uint8) if frame else \
                torch.empty(0, dtype=torch.uint8)
        return made[id(frame)]

    return {r: {j: [tensor(f) for f in frames] for j, frames in peers.items()} for r, peers in sent.items()}


def _sent_frames(value: Any, path: Path) -> dict[int, dict[int, list[bytes]]]:
    """The saved round messages (none in a periodic checkpoint or one of an older version) as bytes, a shared
    frame once; CheckpointError if they are not round -> peer -> list of 1-D uint8 tensors."""
    if value is None:
        return {}
    ok = isinstance(value, dict) and all(
        isinstance(r, int) and isinstance(peers, dict) and all(
            isinstance(j, int) and isinstance(frames, list) and all(
                isinstance(f, torch.Tensor) and f.dtype == torch.uint8 and f.dim() == 1 for f in frames)
            for j, frames in peers.items()) for r, peers in value.items())
    if not ok:
        raise CheckpointError(f"{path}: its saved round messages are not round -> peer -> frames")
    made: dict[int, bytes] = {}

    def frame(t: torch.Tensor) -> bytes:
        if id(t) not in made:
            made[id(t)] = t.numpy().tobytes()
        return made[id(t)]

    return {r: {j: [frame(f) for f in frames] for j, frames in peers.items()} for r, peers in value.items()}


def stale_temp_files(directory: str | Path) -> list[Path]:
    """Temporary files of checkpoint writes that never finished (the process was killed mid-write)."""
    return sorted(Path(directory).glob(f"{temp_prefix(CHECKPOINT_NAME)}*{TEMP_SUFFIX}"))


def clear_stale_temp_files(directory: str | Path) -> int:
    """Remove temp files left by a write that was killed; returns how many were removed."""
    stale = stale_temp_files(directory)
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)
