"""Daemon lifecycle with real processes: SIGTERM and resume, bootstrap death, bootstrap rejections."""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from peernet.config import RunSettings
from peernet.node.checkpoint import load_checkpoint
from peernet.node.launcher import LocalCluster, write_toml
from peernet.security.keys import ensure_keypairs, load_public_key, load_secret_key
from tests.clusters import LENET, params, reference, run_cli, wait_all, wait_for_round


@pytest.mark.slow
def test_sigterm_then_restart_resumes_from_checkpoint_bit_exactly(make_cluster: Any, tmp_path: Path) -> None:
    settings = RunSettings(**LENET, rounds=80)
    cluster = make_cluster(settings, checkpoint_every=5)
    cluster.start()
    wait_for_round(cluster, 1, 25)
    before = cluster.endpoint(1)
    cluster.nodes[1].send_signal(signal.SIGTERM)
    assert cluster.nodes[1].wait(timeout=60) == 0  # clean exit on SIGTERM
    ckpt = load_checkpoint(cluster.state_dir(1), node_id=1, run=_fingerprint(cluster))
    assert ckpt is not None and 25 <= ckpt.round < 80
    cluster.start_node(1, fresh=False)
    wait_all(cluster)
    assert cluster.endpoint(1) == before  # it bound its previous port again: the neighbours' address holds
    summaries = [json.loads((cluster.state_dir(i) / "summary.json").read_text()) for i in range(4)]
    assert all(s["finished"] and s["final_round"] == 80 for s in summaries)
    assert summaries[1]["resumed_from"] == ckpt.round
    # Interrupting and resuming changed nothing: the result equals an uninterrupted run.
    assert float((params(cluster) - reference(settings, tmp_path)).abs().max()) <= 1e-6


def _fingerprint(cluster: LocalCluster) -> str:
    from peernet.config import load_run_settings, resolve_topology, run_fingerprint

    s = load_run_settings(cluster.out / "run.toml")
    return run_fingerprint(s, resolve_topology(s))


@pytest.mark.slow
def test_killing_the_bootstrap_after_start_does_not_stop_training(make_cluster: Any) -> None:
    cluster = make_cluster(RunSettings(**LENET, rounds=60))
    cluster.start()
    wait_for_round(cluster, 0, 5)
    assert cluster.bootstrap is not None
    cluster.bootstrap.kill()
    cluster.bootstrap.wait(timeout=10)
    wait_all(cluster)
    for i in range(4):
        summary = json.loads((cluster.state_dir(i) / "summary.json").read_text())
        assert summary["finished"] and summary["final_round"] == 60


def _stranger_config(cluster: LocalCluster, tmp_path: Path, node_id: int, run_overrides: dict[str, Any],
                     topology_nodes: int | None = None, retries: int = 3) -> Path:
    """The config of a node whose own run settings differ as given (its node.toml)."""
    from peernet.core.topology import generate
    from peernet.topology_files import save_topology

    d = tmp_path / f"stranger{node_id}"
    d.mkdir()
    run = {k: v for k, v in json.loads(json.dumps(cluster.settings.__dict__)).items() if v is not None}
    run.update(run_overrides)
    # With CURVE the stranger holds the cluster's key for its id, or a key of its own for an id the cluster lacks.
    secret = cluster.out / "keys" / f"node{node_id}.key_secret"
    if not secret.exists():
        ensure_keypairs(d / "keys", [f"node{node_id}"])
        secret = d / "keys" / f"node{node_id}.key_secret"
    if topology_nodes is not None:
        keys = {i: load_public_key(cluster.out / "keys" / f"node{i}.key").decode() for i in cluster.topology.ids}
        keys[node_id] = load_secret_key(secret)[0].decode()
        save_topology(generate("ring", topology_nodes).with_keys(keys), d / "topology.toml")
    else:
        (d / "topology.toml").write_text((cluster.out / "topology.toml").read_text())
    run["topology"] = "topology.toml"
    write_toml(d / "run.toml", run)
    write_toml(d / "node.toml", {"id": node_id, "run": "run.toml", "bootstrap": cluster.address,
                                 "state_dir": "state", "bootstrap_timeout": 2.0, "bootstrap_retries": retries,
                                 "secret_key": str(secret),
                                 "bootstrap_public_key_file": str(cluster.out / "keys" / "bootstrap.key")})
    return d / "node.toml"


def test_bootstrap_rejections_are_printed_and_exit_nonzero(make_cluster: Any, tmp_path: Path) -> None:
    settings = RunSettings(dataset="quadratic", nodes=3, topology="ring", rounds=100000)
    cluster = make_cluster(settings)
    cluster.start_bootstrap()
    cluster.start_node(0)  # a live node 0, waiting for the others
    wait_registered(cluster, 0)

    configs = [_stranger_config(cluster, tmp_path, 1, {"lr": 0.01}),
               # A key the bootstrap does not know gets no answer at all (the CURVE handshake fails): exit status 4.
               _stranger_config(cluster, tmp_path, 3, {}, topology_nodes=4, retries=1),
               _stranger_config(cluster, tmp_path, 0, {})]
    with ThreadPoolExecutor(len(configs)) as pool:  # independent of each other: all three at once
        fingerprint, unknown, duplicate = pool.map(lambda c: run_cli(["node", "--config", str(c)], timeout=120),
                                                   configs)
    assert fingerprint.returncode == 3
    assert "fingerprint mismatch" in fingerprint.stderr
    assert unknown.returncode == 4
    assert "did not answer" in unknown.stderr
    assert duplicate.returncode == 3
    assert "already registered by a live process" in duplicate.stderr
    assert cluster.nodes[0].poll() is None  # the legitimate node 0 is unaffected


def wait_registered(cluster: LocalCluster, node_id: int, timeout: float = 60.0) -> None:
    import time

    from peernet.bootstrap.client import BootstrapClient

    deadline = time.monotonic() + timeout
    with BootstrapClient(cluster.address, timeout=1.0, retries=3, curve=cluster.client_curve()) as client:
        while time.monotonic() < deadline:
            nodes = client.status().get("nodes", [])
            if any(n["id"] == node_id and n.get("live") for n in nodes):
                return
            time.sleep(0.2)
    raise AssertionError(f"node {node_id} never registered")
