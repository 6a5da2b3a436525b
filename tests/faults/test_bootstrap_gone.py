"""The bootstrap dies once training runs: training goes on, and a node killed and restarted after that
rejoins with its cached address table (in-process cluster; the process version is `peernet chaos
node/chaos/bootstrap-kill.toml`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from peernet.node.inproc import InProcessCluster
from peernet.node.results import merge_run
from tests.clusters import RING8_QUADRATIC

# A ring of 6 reaches its optimum in 400 rounds with the restart in them (8 nodes needed 800, twice the time).
QUAD = dataclasses.replace(RING8_QUADRATIC, nodes=6, rounds=400)


def test_restart_without_bootstrap_uses_the_cached_table(make_inproc: Callable[..., InProcessCluster]) -> None:
    # The neighbours wait out the restart (a floor far above it), as in the shipped scenario.
    cluster = make_inproc(QUAD, checkpoint_every=10, deadline_floor=30.0, deadline_ceiling=60.0)
    cluster.start()
    cluster.wait_round(0, 50)
    cluster.stop_bootstrap()  # gone for good: nothing answers at its address any more
    cluster.wait_round(2, 100)
    cluster.kill(2)
    cluster.start_node(2, fresh=False)
    ends = cluster.wait()
    s = merge_run(QUAD, cluster.topology, {i: cluster.state_dir(i) for i in range(6)}, 0.0)
    assert s["finished_nodes"] == 6 and s["rejoined_nodes"] == [2]
    assert ends[2]["address_table"] == "cached" and ends[2]["parameters_from"] == "checkpoint"
    assert all(e["address_table"] == "bootstrap" for i, e in ends.items() if i != 2)
    assert s["timeouts"] == 0 and s["tracker_sum_error"] <= 1e-9
    assert s["distance_to_optimum"] <= 1e-6
