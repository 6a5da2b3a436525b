"""The shipped reference cluster in node/ is consistent: every config parses and they agree, keys included."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from peernet.bootstrap.config import load_bootstrap_config
from peernet.bootstrap.service import BootstrapService
from peernet.cli import main
from peernet.config import load_run_settings, resolve_topology
from peernet.errors import ConfigError
from peernet.node.config import load_node_config
from peernet.node.curve import load_node_keys
from peernet.node.daemon import NodeDaemon
from peernet.security.keys import load_public_key

NODE_DIR = Path(__file__).resolve().parents[2] / "node"


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    """A copy of node/ without its keys and state (a fresh checkout), in a temporary directory."""
    copy = tmp_path / "node"
    shutil.copytree(NODE_DIR, copy, ignore=shutil.ignore_patterns("keys", "state"))
    return copy


def test_reference_cluster_needs_its_keys_and_says_how_to_make_them(cluster: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(cluster.parent)
    with pytest.raises(ConfigError, match=r"run `peernet keygen --cluster node` to create the cluster's keys"):
        NodeDaemon(load_node_config("node/node3.toml"))
    result = CliRunner().invoke(main, ["node", "--config", "node/node3.toml"])
    assert result.exit_code == 2 and "peernet keygen --cluster node" in result.output
    made = CliRunner().invoke(main, ["keygen", "--cluster", "node"])
    assert made.exit_code == 0, made.output
    assert "created node0, node1, node2, node3, node4, node5, node6, node7, bootstrap, operator" in made.output
    again = CliRunner().invoke(main, ["keygen", "--cluster", "node"])
    assert again.exit_code == 0 and "created nothing new; kept 10 existing pair(s)" in again.output
    NodeDaemon(load_node_config("node/node3.toml"))  # now it gets as far as its sockets


def test_reference_cluster_configs_agree(cluster: Path) -> None:
    assert CliRunner().invoke(main, ["keygen", "--cluster", str(cluster)]).exit_code == 0
    settings = load_run_settings(cluster / "run.toml")
    topology = resolve_topology(settings)
    assert (settings.algorithm, settings.dataset, settings.model) == ("momentum-tracking", "fashion-mnist", "lenet")
    assert (settings.partition, settings.classes_per_node) == ("classes", 2)
    assert topology.n == 8 and all(topology.degree(i) == 2 for i in topology.ids)  # the 8-node ring
    boot = load_bootstrap_config(cluster / "bootstrap.toml")
    configs = [load_node_config(cluster / f"node{i}.toml") for i in topology.ids]
    assert [c.id for c in configs] == list(topology.ids)
    assert len({c.listen for c in configs} | {boot.listen}) == 9  # no two services on one port
    bootstrap_key = load_public_key(cluster / "keys" / "bootstrap.key")
    for cfg in configs:
        assert Path(cfg.run).resolve() == (cluster / "run.toml").resolve()
        assert cfg.bootstrap == boot.listen
        assert Path(cfg.state_dir).resolve().is_relative_to(cluster.resolve())
        keys = load_node_keys(cfg, topology)  # CURVE on: own key is the topology's, neighbours keyed
        assert keys is not None and keys.bootstrap == bootstrap_key
        assert set(keys.neighbours) == set(topology.neighbours(cfg.id))
    assert boot.secret_key == str(cluster / "keys" / "bootstrap.key_secret")
    assert boot.client_keys_files == [str(cluster / "keys" / "operator.key")]
    anywhere = load_bootstrap_config(cluster / "bootstrap.toml", {"listen": "tcp://127.0.0.1:0"})
    with BootstrapService(anywhere, fresh=True) as service:  # loads its keys and builds the allowlist
        assert service.curve


def test_reference_cluster_runs_curve_by_default() -> None:
    assert all('public_key_file = "keys/node' in block for block in
               (NODE_DIR / "topology.toml").read_text().split("[[nodes]]")[1:])
    assert "node/keys/" in (NODE_DIR.parent / ".gitignore").read_text().splitlines()
    assert "keygen --cluster node" in (NODE_DIR.parent / "scripts" / "setup.sh").read_text()
