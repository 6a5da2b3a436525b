"""The ``endpoint`` file a node or bootstrap writes into its state directory once bound: tools and tests read
where it listens from there (a port picked at random included), never from its log."""

from __future__ import annotations

from pathlib import Path

from peernet.atomic import write_atomic

NAME = "endpoint"


def write_endpoint(state_dir: str | Path, endpoint: str) -> Path:
    """Record ``endpoint`` (atomically: a reader never sees half of it)."""
    return write_atomic(Path(state_dir) / NAME, endpoint + "\n")


def read_endpoint(state_dir: str | Path) -> str | None:
    """The recorded endpoint, or None while there is none."""
    try:
        text = (Path(state_dir) / NAME).read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def clear_endpoint(state_dir: str | Path) -> None:
    """Forget a previous process's endpoint before starting a new one (its file would be stale)."""
    (Path(state_dir) / NAME).unlink(missing_ok=True)
