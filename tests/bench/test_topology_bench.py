"""The topology benchmark runs its steps in fresh processes and its report section renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.run import render_topology
from bench.topology import measure, valid_size


def test_valid_sizes() -> None:
    assert [valid_size("hypercube", n) for n in (1_000, 10_000, 100_000)] == [1024, 16384, 131072]
    assert [valid_size("torus", n) for n in (1_000, 10_000, 100_000, 14)] == [1_000, 10_000, 100_000, 15]
    assert valid_size("random", 10_000) == 10_000


@pytest.mark.timeout(120)
def test_measure_and_render(tmp_path: Path) -> None:
    row = measure("torus", 14, 1, tmp_path)
    assert row["nodes"] == 15 and row["edges"] == 30
    assert row["report"]["diameter"] == 3 and row["report"]["diameter_bounds"] == [3, 3]
    assert row["generate"]["rss_mb_max"] > 10 and row["check"]["median_s"] > 0
    assert set(row["check_phases"]) >= {"read_s", "validate_s", "diameter_s", "gap_s", "fingerprint_s"}
    text = "\n".join(render_topology({"date": "2026-01-01", "cores": 2, "repeats": 1, "results": [row]}))
    assert "## Topology tools" in text and "| torus | 15 | 30 |" in text and "| 3 |" in text
