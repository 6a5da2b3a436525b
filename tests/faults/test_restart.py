"""A node killed and restarted before its neighbours' deadline: its hello makes them roll the edges back, so
Momentum Tracking still reaches the global optimum and the trackers sum to zero."""

from __future__ import annotations

import signal
from collections.abc import Callable

from peernet.config import RunSettings
from peernet.node.launcher import LocalCluster
from peernet.node.results import merge_run
from tests.node.conftest import make_cluster as make_cluster
from tests.node.conftest import wait_all, wait_for_round

QUAD = RunSettings(algorithm="momentum-tracking", topology="ring", nodes=8, dataset="quadratic", heterogeneity=3.0,
                   lr=0.05, rounds=1000, seed=0)


def test_restart_within_the_deadline_keeps_the_tracker_exact(make_cluster: Callable[..., LocalCluster]) -> None:
    # A floor long enough for any restart: the neighbours wait for the new process instead of excluding it.
    cluster = make_cluster(QUAD, checkpoint_every=50, deadline_floor=60.0, deadline_ceiling=120.0)
    cluster.start()
    wait_for_round(cluster, 3, 320)
    cluster.nodes[3].send_signal(signal.SIGKILL)
    cluster.nodes[3].wait(timeout=10)
    cluster.start_node(3, fresh=False)
    wait_all(cluster)
    s = merge_run(QUAD, cluster.topology, {i: cluster.state_dir(i) for i in range(8)}, 0.0)
    log = (cluster.out / "node3.log").read_text()
    print(f"\ntimeouts {s['timeouts']}, tracker sum error {s['tracker_sum_error']:.3g}, "
          f"distance to the optimum {s['distance_to_optimum']:.3g}")
    assert s["finished_nodes"] == 8 and s["rejoined_nodes"] == [3]
    assert "parameters from the checkpoint" in log
    assert s["timeouts"] == 0  # the restart was waited for, never taken for a failure
    assert s["tracker_sum_error"] <= 1e-9  # float64: a lost flow would leave O(1)
    assert s["distance_to_optimum"] <= 1e-6

