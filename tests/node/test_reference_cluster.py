"""The shipped reference cluster in node/ is consistent: every config parses and they agree with each other."""

from __future__ import annotations

from pathlib import Path

from peernet.bootstrap.config import load_bootstrap_config
from peernet.config import load_run_settings, resolve_topology
from peernet.node.config import load_node_config

NODE_DIR = Path(__file__).resolve().parents[2] / "node"


def test_reference_cluster_configs_agree() -> None:
    settings = load_run_settings(NODE_DIR / "run.toml")
    topology = resolve_topology(settings)
    assert (settings.algorithm, settings.dataset, settings.model) == ("momentum-tracking", "fashion-mnist", "lenet")
    assert (settings.partition, settings.classes_per_node) == ("classes", 2)
    assert topology.n == 8 and all(topology.degree(i) == 2 for i in topology.ids)  # the 8-node ring
    boot = load_bootstrap_config(NODE_DIR / "bootstrap.toml")
    configs = [load_node_config(NODE_DIR / f"node{i}.toml") for i in topology.ids]
    assert [c.id for c in configs] == list(topology.ids)
    assert len({c.listen for c in configs} | {boot.listen}) == 9  # no two services on one port
    for cfg in configs:
        assert Path(cfg.run).resolve() == (NODE_DIR / "run.toml").resolve()
        assert cfg.bootstrap == boot.listen
        assert Path(cfg.state_dir).resolve().is_relative_to(NODE_DIR.resolve())
