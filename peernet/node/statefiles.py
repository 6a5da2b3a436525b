"""Small files in a node's state directory besides the checkpoint: its incarnation and the cached address table."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from peernet.atomic import write_atomic

log = logging.getLogger("peernet.node")


def read_incarnation(state_dir: Path) -> str | None:
    path = state_dir / "incarnation"
    text = path.read_text().strip() if path.exists() else ""
    return text or None


def write_incarnation(state_dir: Path, incarnation: str) -> None:
    # It lets a restart replace this registration at once: private from its first byte.
    write_atomic(state_dir / "incarnation", incarnation + "\n", mode=0o600)


def read_table(state_dir: Path) -> dict[int, dict[str, Any]] | None:
    path = state_dir / "table.json"
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        return {int(k): v for k, v in raw.items()}
    except (ValueError, AttributeError):
        log.warning("ignoring unreadable cached address table %s", path)
        return None


def write_table(state_dir: Path, table: dict[int, dict[str, Any]]) -> None:
    write_atomic(state_dir / "table.json", json.dumps({str(k): v for k, v in table.items()}))
