"""A node's CURVE settings: key paths relative to its file, and every inconsistency caught before a socket opens."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from peernet.config import load_run_settings, resolve_topology
from peernet.core.topology import generate
from peernet.errors import BootstrapUnavailable, ConfigError
from peernet.node.config import load_node_config
from peernet.node.curve import NodeKeys, load_node_keys
from peernet.node.daemon import NodeDaemon
from peernet.node.launcher import write_toml
from peernet.security.keys import ensure_keypairs
from peernet.topology_files import save_topology
from tests.bootstrap import write_run

NAMES = ["node0", "node1", "node2", "node3", "bootstrap", "operator"]


def keyed_cluster(d: Path, *, keyed: tuple[int, ...] = (0, 1, 2, 3)) -> dict[str, bytes]:
    """A 4-node ring run in ``d`` whose topology carries the keys of the nodes in ``keyed``."""
    write_run(d, n=4)
    public = ensure_keypairs(d / "keys", NAMES)
    save_topology(generate("ring", 4).with_keys({i: public[f"node{i}"].decode() for i in keyed}), d / "topology.toml")
    return public


def node_file(d: Path, node_id: int = 0, /, **extra: object) -> Path:
    path = d / f"node{node_id}.toml"
    cfg = {"id": node_id, "run": "run.toml", "secret_key": f"keys/node{node_id}.key_secret",
           "bootstrap_public_key_file": "keys/bootstrap.key", **extra}
    write_toml(path, {k: v for k, v in cfg.items() if v != "-"})
    return path


def keys_of(path: Path) -> NodeKeys | None:
    cfg = load_node_config(path)
    return load_node_keys(cfg, resolve_topology(load_run_settings(cfg.run)))


def test_keys_load_relative_to_the_node_file(tmp_path: Path) -> None:
    public = keyed_cluster(tmp_path)
    cfg = load_node_config(node_file(tmp_path))
    assert cfg.secret_key == str(tmp_path / "keys" / "node0.key_secret")
    assert cfg.bootstrap_public_key_file == str(tmp_path / "keys" / "bootstrap.key")
    keys = load_node_keys(cfg, resolve_topology(load_run_settings(cfg.run)))
    assert keys is not None and keys.public == public["node0"] and keys.bootstrap == public["bootstrap"]
    assert keys.neighbours == {1: public["node1"], 3: public["node3"]}  # exactly the ring neighbours
    assert keys.transport().allowlist() == {public["node1"]: "1", public["node3"]: "3"}
    assert keys.client().server_key == public["bootstrap"].decode()
    inline = node_file(tmp_path, bootstrap_public_key=public["bootstrap"].decode(), bootstrap_public_key_file="-")
    inline_keys = keys_of(inline)
    assert inline_keys is not None and inline_keys.bootstrap == public["bootstrap"]


@pytest.mark.parametrize(("extra", "message"), [
    ({"secret_key": "keys/node1.key_secret"}, "is not the topology's key for node 0"),
    ({"bootstrap_public_key_file": "keys/node1.key"}, "the bootstrap's public key is node 1's key"),
    ({"bootstrap_public_key_file": "-"}, "needs the bootstrap's public key"),
    ({"secret_key": "-"}, "a bootstrap public key needs this node's own secret_key"),
    ({"bootstrap_public_key": "x" * 40}, "not both"),
    ({"bootstrap_public_key": "short", "bootstrap_public_key_file": "-"}, "must be 40 z85 characters"),
    ({"bootstrap_public_key": "%" * 40, "bootstrap_public_key_file": "-"}, "does not decode"),
    # all zeros: a small-order point, with which every CURVE handshake fails (as the topology's keys are checked)
    ({"bootstrap_public_key": "0" * 40, "bootstrap_public_key_file": "-"}, "small-order Curve25519 point"),
])
def test_inconsistent_keys_are_config_errors(tmp_path: Path, extra: dict[str, str], message: str) -> None:
    keyed_cluster(tmp_path)
    with pytest.raises(ConfigError, match=message):
        keys_of(node_file(tmp_path, **extra))


def test_topology_must_have_keys_for_the_node_and_its_neighbours(tmp_path: Path) -> None:
    keyed_cluster(tmp_path, keyed=(0, 1))
    with pytest.raises(ConfigError, match=r"no public key for its neighbour\(s\) \[3\]"):
        keys_of(node_file(tmp_path, 0))
    with pytest.raises(ConfigError, match="gives node 2 no public key"):
        keys_of(node_file(tmp_path, 2))
    plain = node_file(tmp_path, 1, secret_key="-", bootstrap_public_key_file="-")
    with pytest.raises(ConfigError, match="the topology gives node 1 a public key, so its neighbours"):
        keys_of(plain)
    assert keys_of(node_file(tmp_path, 2, secret_key="-", bootstrap_public_key_file="-")) is None


def test_secret_key_readable_by_others_stops_the_node(tmp_path: Path) -> None:
    keyed_cluster(tmp_path)
    (tmp_path / "keys" / "node0.key_secret").chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        NodeDaemon(load_node_config(node_file(tmp_path)))


def test_plain_node_beyond_loopback_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    write_run(tmp_path, n=3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here: registration fails fast after the warning
    path = node_file(tmp_path, secret_key="-", bootstrap_public_key_file="-", bootstrap=f"tcp://127.0.0.1:{port}",
                     bootstrap_timeout=0.2, bootstrap_retries=1, state_dir="state")
    # Pretend 127.0.0.1 were a public address, so that no test ever listens beyond loopback.
    monkeypatch.setattr("peernet.security.zap.is_loopback", lambda address: False)
    with caplog.at_level(logging.WARNING, logger="peernet.security"), pytest.raises(BootstrapUnavailable):
        NodeDaemon(load_node_config(path), fresh=True).run()
    assert "node 0 listens on tcp://127.0.0.1:* without CURVE: traffic is unauthenticated" in caplog.text
    assert "peernet keygen --cluster" in caplog.text
