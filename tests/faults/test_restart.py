"""A node killed and restarted before its neighbours' deadline: its hello makes them roll the edges back, so
Momentum Tracking still reaches the global optimum and the trackers sum to zero (in-process cluster)."""

from __future__ import annotations

from collections.abc import Callable

from peernet.node.inproc import InProcessCluster
from peernet.node.results import merge_run
from tests.clusters import RING8_QUADRATIC

QUAD = RING8_QUADRATIC


def test_restart_within_the_deadline_keeps_the_tracker_exact(make_inproc: Callable[..., InProcessCluster]) -> None:
    # A floor long enough for any restart: the neighbours wait for the new daemon instead of excluding it.
    cluster = make_inproc(QUAD, checkpoint_every=50, deadline_floor=30.0, deadline_ceiling=60.0)
    cluster.start()
    cluster.wait_round(3, 320)
    cluster.kill(3)
    cluster.start_node(3, fresh=False)
    ends = cluster.wait()
    s = merge_run(QUAD, cluster.topology, {i: cluster.state_dir(i) for i in range(8)}, 0.0)
    print(f"\ntimeouts {s['timeouts']}, tracker sum error {s['tracker_sum_error']:.3g}, "
          f"distance to the optimum {s['distance_to_optimum']:.3g}")
    assert s["finished_nodes"] == 8 and s["rejoined_nodes"] == [3]
    assert ends[3]["parameters_from"] == "checkpoint"
    assert s["timeouts"] == 0  # the restart was waited for, never taken for a failure
    assert s["tracker_sum_error"] <= 1e-9  # float64: a lost flow would leave O(1)
    assert s["distance_to_optimum"] <= 1e-6
