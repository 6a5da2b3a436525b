"""A whole cluster stopped cleanly with its nodes at different rounds resumes bit-exactly (in-process cluster)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from peernet.config import load_run_settings, resolve_topology, run_fingerprint
from peernet.node.checkpoint import load_checkpoint
from peernet.node.inproc import InProcessCluster
from tests.clusters import RING8_QUADRATIC, params, reference

QUAD = dataclasses.replace(RING8_QUADRATIC, nodes=4, rounds=150)
#: No timeouts while node 0 is gone: its neighbours wait for it (the initial patience is the ceiling).
PATIENT = {"checkpoint_every": 0, "deadline_floor": 30.0, "deadline_ceiling": 60.0}


def test_cluster_stopped_at_different_rounds_resumes_bit_exactly(make_inproc: Callable[..., InProcessCluster],
                                                                  tmp_path: Path) -> None:
    cluster = make_inproc(QUAD, **PATIENT)
    cluster.start()
    cluster.wait_round(0, 40, 60)
    cluster.nodes[0].daemon.stop_event.set()  # node 0 first, alone: the others go on as far as they can
    k = cluster.wait([0])[0]["final_round"]
    # Nodes 1 and 3 finish round k - 1 (node 0 sent it); node 2, two hops away, then finishes round k too. None
    # can pass round k + 1 without node 0's message of that round, so the rounds stay staggered until the stop.
    cluster.wait_round(2, k + 1, 30)
    cluster.stop()
    s = load_run_settings(cluster.out / "run.toml")
    run = run_fingerprint(s, resolve_topology(s))
    ckpts = {i: load_checkpoint(cluster.state_dir(i), node_id=i, run=run) for i in range(4)}
    rounds = {i: c.round for i, c in ckpts.items() if c is not None}
    assert rounds[0] == k and rounds[2] > k and all(c is not None and c.extra["clean"] for c in ckpts.values())
    # A neighbour one round behind needs each node's last round message again: the clean checkpoints hold it.
    assert all(list(c.sent) == [c.round - 1] for c in ckpts.values() if c is not None)

    cluster.start_bootstrap()  # a new one, as `peernet local --resume` starts
    for i in range(4):
        cluster.start_node(i, fresh=False)
    ends = cluster.wait(timeout=120)
    assert all(e["finished"] and e["resumed_from"] == rounds[i] for i, e in ends.items()), ends
    assert sum(sum(e["timeouts"].values()) for e in ends.values()) == 0
    assert torch.equal(params(cluster), reference(QUAD, tmp_path))  # as if never interrupted
