"""The shipped chaos scenarios (node/chaos/*.toml) on the reference run: every node finishes, quality holds.

Only what needs real processes runs here: SIGKILL and restart, SIGSTOP and SIGCONT, a lossy network in
namespaces. The bootstrap-kill scenario's behaviour is tested in-process (tests/faults/test_bootstrap_gone.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from peernet.chaos.harness import ChaosRun
from peernet.chaos.netns import check_available
from peernet.chaos.scenario import load_scenario
from peernet.sim.run import run_simulation

SCENARIOS = Path(__file__).resolve().parents[2] / "node" / "chaos"
TOLERANCE = 0.015  # 1.5 accuracy points


#: ‖Σ c_i‖ / max ‖c_i‖ of the final float32 trackers: rounding leaves about 1e-6; a lost flow leaves O(1).
TRACKER_TOLERANCE = 1e-4


def run(name: str, out: Path) -> dict[str, Any]:
    report = ChaosRun(load_scenario(SCENARIOS / f"{name}.toml"), out / name).run()
    s = report["summary"]
    print(f"\n{name}: mean test accuracy {s['mean_test_accuracy']:.4f}, finished {s['finished_nodes']}, "
          f"timeouts {s['timeouts']}, catch-ups {s['catchups']}, rejoined {s['rejoined_nodes']}, "
          f"tracker sum error {s['tracker_sum_error']:.2g}, {s['wall_seconds']:.0f}s; events {report['events']}")
    # Per node, so that a failure in CI says where it went wrong (shown by pytest only when a test fails).
    for d in sorted((out / name / "nodes").iterdir()):
        n = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
        print(f"  {d.name}: accuracy {n.get('test_accuracy')} at round {n.get('round')}/{n.get('final_round')}, "
              f"timeouts {n.get('timeouts')}, catch-ups {n.get('catchups')}, rejoined {n.get('rejoined')}, "
              f"longest wait {n.get('max_wait_s')}")
    for log in sorted((out / name).glob("node*.log")):
        notable = [line for line in log.read_text().splitlines() if "WARNING" in line or "rejoin" in line]
        print(f"  {log.name}: " + " | ".join(notable[-6:]))
    return report


@pytest.fixture(scope="module")
def baseline() -> dict[str, Any]:
    """The fault-free scenario's result, from the simulator: without faults the daemons compute the very same
    run (tests/node/test_local_equivalence.py), and the simulator takes a fraction of the time."""
    return run_simulation(load_scenario(SCENARIOS / "fault-free.toml").settings, progress=False)


def node_summary(out: Path, name: str, node: int) -> dict[str, Any]:
    return json.loads((out / name / "nodes" / f"node{node}" / "summary.json").read_text())


@pytest.mark.slow
def test_kill_and_restart_resumes_from_checkpoint(baseline: dict[str, Any], tmp_path: Path) -> None:
    s = run("kill-restart", tmp_path)["summary"]
    assert s["finished_nodes"] == 8
    assert s["rejoined_nodes"] == [3]
    three = node_summary(tmp_path, "kill-restart", 3)
    assert 35 <= three["resumed_from"] <= 40  # killed after round 40; checkpoints every 5 rounds
    assert three["finished"] and three["rejoined"] and three["parameters_from"] == "checkpoint"
    assert s["tracker_sum_error"] <= TRACKER_TOLERANCE
    # The neighbours waited for the restart: node 3 skipped only the rounds since its checkpoint (and the one or
    # two they had done meanwhile), not the rounds the others trained while it was down.
    assert s["rounds_skipped"] <= 8
    assert abs(s["mean_test_accuracy"] - baseline["mean_test_accuracy"]) <= TOLERANCE


@pytest.mark.slow
def test_sigstop_neighbours_go_on_and_it_catches_up(baseline: dict[str, Any], tmp_path: Path) -> None:
    report = run("stop-cont", tmp_path)
    stop, cont = report["events"]
    # While node 5 was frozen its neighbours kept training ...
    for j in (4, 6):
        assert cont["rounds"][j] - stop["rounds"][j] >= 20
    assert cont["rounds"][5] == stop["rounds"][5]
    # ... and after SIGCONT it caught up with them, was mixed with again, and finished.
    five = node_summary(tmp_path, "stop-cont", 5)
    assert five["finished"] and five["catchups"] >= 1
    events = [json.loads(line) for line in (tmp_path / "stop-cont" / "nodes" / "node5" / "metrics.jsonl").open()]
    # It saw at once that it was behind (in its first round after SIGCONT), rather than first replaying, alone,
    # the stale rounds queued in its socket while its neighbours went on (which left it too few rounds to finish
    # with its neighbours on a slow machine).
    (jump,) = [e for e in events if e.get("event") == "catchup"]
    assert jump["round"] <= stop["rounds"][5] + 2 and jump["to"] >= cont["rounds"][4]
    # Both edges back in use a few rounds after the jump (the neighbours re-admit it), and for good.
    after = [e for e in events if e.get("event") == "round" and e["round"] > jump["to"] + 3]
    assert len(after) >= 10 and all(e["used"] == 2 for e in after), [(e["round"], e["used"]) for e in after]
    assert report["summary"]["finished_nodes"] == 8
    assert report["summary"]["tracker_sum_error"] <= TRACKER_TOLERANCE


@pytest.mark.slow
@pytest.mark.skipif(check_available() is not None, reason=f"network namespaces unavailable: {check_available()}")
def test_lossy_network_in_namespaces(baseline: dict[str, Any], tmp_path: Path) -> None:
    s = run("lossy-network", tmp_path)["summary"]
    assert s["finished_nodes"] == 8
    assert s["tracker_sum_error"] <= TRACKER_TOLERANCE
    assert abs(s["mean_test_accuracy"] - baseline["mean_test_accuracy"]) <= TOLERANCE
