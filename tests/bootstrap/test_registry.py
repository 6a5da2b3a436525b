"""Registration rules and persistence of the bootstrap registry, with the clock passed in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from peernet.bootstrap.config import BootstrapConfig, load_bootstrap_config
from peernet.bootstrap.registry import Refused, Registry
from peernet.config import load_run_settings, resolve_topology, run_fingerprint
from peernet.core.topology import Topology, generate
from peernet.errors import ConfigError
from tests.bootstrap import write_config, write_run

FP = "f" * 16
T0 = 1_700_000_000.0  # a wall-clock instant; the registry persists these


@pytest.fixture
def topo() -> Topology:
    return generate("ring", 3)


@pytest.fixture
def reg(tmp_path: Path, topo: Topology) -> Iterator[Registry]:
    registry = Registry(tmp_path / "registry.sqlite3", topo, FP, node_ttl=10.0)
    yield registry
    registry.close()


def ep(node_id: int, port: int = 6000) -> str:
    return f"tcp://127.0.0.1:{port + node_id}"


def register_all(reg: Registry, now: float = T0) -> None:
    for i in range(3):
        reg.register(i, ep(i), None, FP, f"inc{i}", now)


def test_accept_and_not_started_until_all(reg: Registry) -> None:
    assert reg.register(0, ep(0), None, FP, "a", T0) == "new"
    assert not reg.started
    assert reg.missing() == [1, 2]
    assert reg.table() == {0: {"endpoint": ep(0), "public_key": None}}


def test_unknown_id_rejected(reg: Registry) -> None:
    with pytest.raises(Refused, match=r"unknown node id 7.*\[0, 1, 2\]"):
        reg.register(7, ep(7), None, FP, "a", T0)


def test_fingerprint_mismatch_names_both(reg: Registry) -> None:
    with pytest.raises(Refused, match="expected ffffffffffff, got 000000000000"):
        reg.register(0, ep(0), None, "0" * 16, "a", T0)


def test_public_key_must_match_topology(tmp_path: Path) -> None:
    key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    topo = generate("ring", 3).with_keys({0: key})
    registry = Registry(tmp_path / "r.sqlite3", topo, FP)
    try:
        with pytest.raises(Refused, match="public key"):
            registry.register(0, ep(0), None, FP, "a", T0)
        assert registry.register(0, ep(0), key, FP, "a", T0) == "new"
    finally:
        registry.close()


def test_duplicate_live_id_rejected(reg: Registry) -> None:
    reg.register(1, ep(1), None, FP, "first", T0)
    with pytest.raises(Refused, match="already registered by a live process"):
        reg.register(1, ep(1, 7000), None, FP, "second", T0 + 9.0)
    assert reg.table()[1]["endpoint"] == ep(1)


def test_same_incarnation_is_idempotent(reg: Registry) -> None:
    reg.register(1, ep(1), None, FP, "x", T0)
    assert reg.register(1, ep(1), None, FP, "x", T0 + 1) == "again"
    assert len(reg.table()) == 1


def test_reregister_after_ttl_expiry(reg: Registry) -> None:
    reg.register(1, ep(1), None, FP, "old", T0)
    reg.heartbeat(1, "old", 5, "training", {"loss": 1.0}, T0 + 5)
    assert reg.register(1, ep(1, 7000), None, FP, "new", T0 + 15.1) == "replaced"
    assert reg.table()[1]["endpoint"] == ep(1, 7000)
    with pytest.raises(Refused, match="another incarnation"):
        reg.heartbeat(1, "old", 6, "training", {}, T0 + 16)


def test_reregister_after_leave(reg: Registry) -> None:
    reg.register(2, ep(2), None, FP, "old", T0)
    assert reg.leave(2, "old", T0 + 1)
    assert not reg.leave(2, "old", T0 + 1.5)
    assert 2 not in reg.live_ids(T0 + 2)
    assert reg.register(2, ep(2), None, FP, "new", T0 + 2) == "replaced"
    assert 2 in reg.live_ids(T0 + 2)


def test_heartbeat_and_leave_keep_metrics(reg: Registry) -> None:
    register_all(reg)
    reg.heartbeat(0, "inc0", 42, "training", {"loss": 0.5, "accuracy": 0.9, "bytes_out": 10, "bytes_in": 20},
                  T0 + 3)
    reg.leave(0, "inc0", T0 + 4)
    node = reg.status(T0 + 6)[0]
    assert node["round"] == 42 and node["loss"] == 0.5 and node["accuracy"] == 0.9
    assert node["bytes_out"] == 10 and node["bytes_in"] == 20
    assert node["left"] and not node["live"] and node["last_seen_age"] == pytest.approx(2.0)
    with pytest.raises(Refused, match="has left"):
        reg.heartbeat(0, "inc0", 43, "training", {}, T0 + 7)


def test_wrong_incarnation_and_unregistered(reg: Registry) -> None:
    with pytest.raises(Refused, match="not registered"):
        reg.wait_start(0, "x", T0)
    reg.register(0, ep(0), None, FP, "x", T0)
    with pytest.raises(Refused, match="another incarnation"):
        reg.wait_start(0, "y", T0)


def test_started_when_all_registered(reg: Registry) -> None:
    register_all(reg)
    assert reg.started and reg.missing() == []
    assert reg.table() == {i: {"endpoint": ep(i), "public_key": None} for i in range(3)}
    assert reg.wait_start(0, "inc0", T0 + 1)


def test_late_registration_after_start_sees_table(reg: Registry) -> None:
    register_all(reg)
    reg.leave(1, "inc1", T0 + 1)
    assert reg.started, "started is sticky"
    assert 1 not in reg.table()
    reg.register(1, ep(1, 8000), None, FP, "restarted", T0 + 2)
    assert reg.started and reg.table()[1]["endpoint"] == ep(1, 8000)


def test_max_nodes_bound(tmp_path: Path, topo: Topology) -> None:
    registry = Registry(tmp_path / "r.sqlite3", topo, FP, max_nodes=2)
    try:
        registry.register(0, ep(0), None, FP, "a", T0)
        registry.register(1, ep(1), None, FP, "b", T0)
        with pytest.raises(Refused, match="registry full"):
            registry.register(2, ep(2), None, FP, "c", T0)
        assert registry.register(1, ep(1), None, FP, "b", T0) == "again", "known ids still re-register"
    finally:
        registry.close()


def test_status_lists_unregistered_nodes(reg: Registry) -> None:
    reg.register(0, ep(0), None, FP, "a", T0)
    states = [(n["id"], n["state"], n["live"]) for n in reg.status(T0 + 1)]
    assert states == [(0, "registered", True), (1, "unregistered", False), (2, "unregistered", False)]
    assert not reg.status(T0 + 10.5)[0]["live"]


def test_persistence_across_reopen(tmp_path: Path, topo: Topology) -> None:
    path = tmp_path / "r.sqlite3"
    first = Registry(path, topo, FP, node_ttl=10.0)
    register_all(first)
    first.heartbeat(2, "inc2", 7, "done", {"loss": float("nan")}, T0 + 1)
    before = (first.status(T0 + 2), first.table())
    first.close()
    second = Registry(path, topo, FP, node_ttl=10.0)
    try:
        after = second.status(T0 + 2)
        assert second.started and second.table() == before[1]
        assert after[:2] == before[0][:2] and after[2]["round"] == 7 and after[2]["state"] == "done"
        with pytest.raises(Refused, match="live process"):  # liveness uses the persisted wall clock
            second.register(0, ep(0), None, FP, "other", T0 + 3)
        assert second.register(0, ep(0), None, FP, "other", T0 + 11) == "replaced"
    finally:
        second.close()


def test_fresh_discards_state(tmp_path: Path, topo: Topology) -> None:
    path = tmp_path / "r.sqlite3"
    first = Registry(path, topo, FP)
    register_all(first)
    first.close()
    second = Registry(path, topo, "0" * 16, fresh=True)
    try:
        assert not second.started and second.table() == {}
    finally:
        second.close()


def test_reopen_with_other_run_refused(tmp_path: Path, topo: Topology) -> None:
    path = tmp_path / "r.sqlite3"
    Registry(path, topo, FP).close()
    with pytest.raises(ConfigError, match=r"another run.*--fresh"):
        Registry(path, topo, "0" * 16)


def test_corrupt_file_is_config_error(tmp_path: Path, topo: Topology) -> None:
    path = tmp_path / "r.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a usable registry"):
        Registry(path, topo, FP)


def test_run_fingerprint_matches_settings(tmp_path: Path) -> None:
    settings = load_run_settings(write_run(tmp_path))
    topology = resolve_topology(settings)
    assert run_fingerprint(settings, topology) == settings.fingerprint(topology.fingerprint())
    other = load_run_settings(write_run(tmp_path / "b", seed=1))
    assert run_fingerprint(other, resolve_topology(other)) != run_fingerprint(settings, topology)


def test_config_paths_relative_to_file(tmp_path: Path) -> None:
    config = load_bootstrap_config(write_config(tmp_path / "cfg", node_ttl=3))
    assert config.run == str(tmp_path / "cfg" / "run.toml") and config.node_ttl == 3.0
    assert config.registry_path == tmp_path / "cfg" / "state" / "bootstrap" / "registry.sqlite3"


@pytest.mark.parametrize(("text", "key"), [('lisen = "tcp://x:1"', "lisen"), ("node_ttl = 0", "node_ttl"),
                                           ("max_nodes = 0", "max_nodes"), ('listen = "5550"', "listen"),
                                           ('node_ttl = "15"', "node_ttl"),
                                           ('client_keys_files = "keys/operator.key"', "client_keys_files"),
                                           ('secret_key = "s"\nclient_keys_files = ["a.key", 3]', "client_keys_files"),
                                           ('client_keys_files = ["keys/operator.key"]', "secret_key")])
def test_config_rejects_bad_keys(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bootstrap.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        load_bootstrap_config(path)
    assert BootstrapConfig().listen == "tcp://127.0.0.1:5550"


def test_config_key_lists(tmp_path: Path) -> None:
    path = tmp_path / "bootstrap.toml"
    path.write_text('secret_key = "s"\nclient_keys_files = ["a.key", 3]\n')
    with pytest.raises(ConfigError, match=r"key 'client_keys_files': item 1: expected str, got int 3"):
        load_bootstrap_config(path)
    path.write_text('secret_key = "/abs/b.key_secret"\nclient_keys_files = ["keys/a.key", "/abs/c.key"]\n')
    config = load_bootstrap_config(path)
    assert config.secret_key == "/abs/b.key_secret"
    assert config.client_keys_files == [str(tmp_path / "keys" / "a.key"), "/abs/c.key"]
    assert BootstrapConfig().client_keys_files == [] and BootstrapConfig().secret_key is None


def test_a_loading_node_is_live_but_not_registered(reg: Registry) -> None:
    assert reg.loading(0, None, FP, "a", T0) == "new"
    reg.heartbeat(0, "a", 0, "loading", {}, T0 + 5)  # its heartbeats keep it live while it loads
    node0 = reg.status(T0 + 12)[0]
    assert (node0["state"], node0["live"], node0["endpoint"]) == ("loading", True, None)
    assert not reg.status(T0 + 16)[0]["live"]  # and without them it falls silent, like any node


def test_loading_rows_count_for_no_start_and_no_table(reg: Registry) -> None:
    for i in range(3):
        reg.loading(i, None, FP, f"inc{i}", T0)
    reg.register(1, ep(1), None, FP, "inc1", T0)
    reg.register(2, ep(2), None, FP, "inc2", T0)
    assert not reg.started and reg.missing() == [0] and set(reg.table()) == {1, 2}
    assert reg.register(0, ep(0), None, FP, "inc0", T0 + 1) == "new"  # the same incarnation, now with its endpoint
    assert reg.started and set(reg.table()) == {0, 1, 2}
    # A late announcement or a heartbeat still saying "loading" does not take the registration back.
    assert reg.loading(0, None, FP, "inc0", T0 + 2) == "again"
    reg.heartbeat(0, "inc0", 0, "loading", {}, T0 + 2)
    assert reg.status(T0 + 2)[0]["state"] == "registered" and 0 in reg.table()


def test_loading_has_the_registration_checks(reg: Registry) -> None:
    with pytest.raises(Refused, match="fingerprint mismatch"):
        reg.loading(0, None, "0" * 16, "a", T0)
    reg.register(0, ep(0), None, FP, "a", T0)
    with pytest.raises(Refused, match="already registered by a live process"):
        reg.loading(0, None, FP, "b", T0 + 1)
    # A restart names the incarnation it replaces; it keeps its last round until it trains again.
    reg.heartbeat(0, "a", 40, "training", {"loss": 0.5}, T0 + 1)
    assert reg.loading(0, None, FP, "b", T0 + 2, replaces="a") == "replaced"
    reg.heartbeat(0, "b", 0, "loading", {}, T0 + 3)
    node0 = reg.status(T0 + 3)[0]
    assert (node0["state"], node0["round"], node0["loss"]) == ("loading", 40, 0.5) and 0 not in reg.table()
