"""The wire benchmark's CURVE variant moves the right bytes, and the report shows its row only when measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zmq

from bench.run import render_wire
from bench.wire import MB, MiB, Plan, measure

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_peernet_curve_method_delivers_the_tensor() -> None:
    plan = Plan(sizes=[2 * MB], warmup=1, trials=1, repeats=2, window=2, chunk=MiB)
    seconds = measure("peernet-curve", plan)  # raises if the received tensor's digest differs
    assert list(seconds) == [2 * MB] and len(seconds[2 * MB]) == 1 and seconds[2 * MB][0] > 0


def test_report_has_a_curve_row_only_when_measured() -> None:
    data = json.loads((ROOT / "docs" / "performance.json").read_text())
    plain = [row for row in data["wire"]["results"] if row["method"] != "peernet-curve"]
    without = "\n".join(render_wire(dict(data["wire"], results=plain, curve_analysis=[])))
    assert "peernet-curve" not in without
    curve = [dict(row, method="peernet-curve", gbps_median=row["gbps_median"] / 2) for row in plain
             if row["method"] == "peernet"]
    text = "\n".join(render_wire(dict(data["wire"], results=plain + curve)))
    assert "| peernet-curve | 44 MB |" in text and "0.50× at 4 MB, 0.50× at 44 MB" in text


@pytest.mark.timeout(120)
def test_ceiling_jobs_deliver_the_tensor_under_every_setting() -> None:
    """Each setting the ceiling search can pick moves the right bytes (run_jobs checks every digest)."""
    from bench.wire_ceiling import Job, Knobs, run_jobs

    knobs = [Knobs(), Knobs(proto="ipc", frame=256 * 1024, recv="frames", sockbuf=MiB, io_threads=2, send_copy=True)]
    seconds = run_jobs([Job(k, 3 * MB + 5, warmup=1, trials=2, repeats=2) for k in knobs])
    assert [len(s) for s in seconds] == [2, 2] and all(t > 0 for s in seconds for t in s)


@pytest.mark.timeout(120)
def test_wire_memory_benchmark_receives_in_place_and_as_frames() -> None:
    from bench.wire_memory import measure as measure_memory

    for in_place in (True, False):
        row = measure_memory(4 * MB, 3, in_place)  # raises if the tensor received differs
        assert row["messages"] == 3 and len(row["series"]) == 3
