"""curves.png shows, beside the loss, what the nodes evaluated: accuracy, the distance to the optimum, or nothing."""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path
from typing import Any

import pytest

from peernet.node.results import plot_run


def png_width(path: Path) -> int:
    return int(struct.unpack(">I", path.read_bytes()[16:20])[0])


@pytest.mark.parametrize(("evals", "width"), [
    ({"distance_to_optimum": 0.5}, 1210),  # quadratic: two panels, no empty accuracy one
    ({"test_accuracy": 0.5}, 1210),
    ({}, 660),                              # nothing evaluated: the loss alone
])
def test_curves_png_panels_without_warnings(tmp_path: Path, evals: dict[str, Any], width: int) -> None:
    dirs = {}
    for i in range(2):
        dirs[i] = tmp_path / f"node{i}"
        dirs[i].mkdir()
        records = [{"event": "round", "round": r, "loss": 1.0 / r} for r in range(1, 5)]
        records += [{"event": "eval", "round": 4, **evals}] if evals else []
        (dirs[i] / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "No artists with labels found to put in legend"
        path = plot_run(dirs, tmp_path / "curves.png")
    assert png_width(path) == width
