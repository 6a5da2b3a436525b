"""The bootstrap service over real sockets on 127.0.0.1: the service runs in a thread, clients in the test."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from peernet.bootstrap.client import BootstrapClient, ClientCurve, new_incarnation
from peernet.bootstrap.config import load_bootstrap_config
from peernet.bootstrap.service import BootstrapService
from peernet.core.topology import generate
from peernet.errors import BootstrapRejected, BootstrapUnavailable, ConfigError, TransportError
from peernet.security.keys import ensure_keypairs, load_public_key, load_secret_key
from peernet.topology_files import save_topology
from tests.bootstrap import write_config

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def service(config_path: Path) -> Iterator[BootstrapService]:
    svc = BootstrapService(load_bootstrap_config(config_path))
    svc.start_in_thread()
    yield svc
    svc.close()


@pytest.fixture
def client(service: BootstrapService) -> Iterator[BootstrapClient]:
    with BootstrapClient(service.endpoint, timeout=2.0, retries=2) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def register(client: BootstrapClient, service: BootstrapService, node_id: int, inc: str) -> dict[str, Any]:
    return client.register(node_id, f"tcp://127.0.0.1:{7000 + node_id}", fingerprint=service.fingerprint,
                           incarnation=inc)


def test_full_flow_three_nodes(service: BootstrapService, client: BootstrapClient) -> None:
    incs = [new_incarnation() for _ in range(3)]
    first = register(client, service, 0, incs[0])
    assert first == {"ok": True, "started": False, "missing": 2, "expected": 3}
    with pytest.raises(BootstrapUnavailable, match=r"2 nodes still missing"):
        client.wait_start(0, incs[0], timeout=0.3, poll=0.05)
    register(client, service, 1, incs[1])
    last = register(client, service, 2, incs[2])
    expected = {i: {"endpoint": f"tcp://127.0.0.1:{7000 + i}", "public_key": None} for i in range(3)}
    assert last["started"] and last["table"] == expected
    for i in range(3):
        assert client.wait_start(i, incs[i], timeout=2.0) == expected
    beat = client.heartbeat(1, incs[1], round=4, state="training",
                            metrics={"loss": 0.25, "accuracy": 0.5, "bytes_out": 2048, "bytes_in": 1024})
    assert beat == {"ok": True, "table": expected}
    assert client.leave(2, incs[2])
    status = client.status()
    assert status["ok"] and status["started"] and status["expected"] == 3
    nodes = {n["id"]: n for n in status["nodes"]}
    assert nodes[1]["round"] == 4 and nodes[1]["loss"] == 0.25 and nodes[1]["bytes_out"] == 2048
    assert nodes[1]["state"] == "training" and nodes[1]["live"] and nodes[1]["last_seen_age"] < 5
    assert nodes[0]["state"] == "waiting" and not nodes[2]["live"] and nodes[2]["left"]


def test_rejections_propagate(service: BootstrapService, client: BootstrapClient,
                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="peernet.bootstrap"):
        with pytest.raises(BootstrapRejected, match="unknown node id 9"):
            register(client, service, 9, "a")
        with pytest.raises(BootstrapRejected, match=r"fingerprint mismatch: expected .* got 0000"):
            client.register(0, "tcp://127.0.0.1:7000", fingerprint="0" * 16, incarnation="a")
        register(client, service, 0, "a")
        with pytest.raises(BootstrapRejected, match="live process"):
            register(client, service, 0, "b")
    assert "rejected registration of node 9" in caplog.text
    reply = client.heartbeat(0, "b", round=0, state="training")
    assert not reply["ok"] and "another incarnation" in reply["reason"]
    with pytest.raises(BootstrapRejected, match="not registered"):
        client.wait_start(1, "z", timeout=1.0)
    assert client.status()["rejected"] == 5


def raw_request(endpoint: str, frames: list[bytes]) -> dict[str, Any]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(endpoint)
        sock.send_multipart(frames)
        assert sock.poll(3000, zmq.POLLIN), "no reply to a malformed request"
        reply = msgpack.unpackb(sock.recv(), raw=False)
        assert isinstance(reply, dict)
        return reply
    finally:
        sock.close(linger=0)
        ctx.destroy(linger=0)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj)


BAD = [
    ([b"\xc1garbage"], "not a msgpack"),
    ([pack({"op": "status"}) + b"x"], "not a msgpack"),
    ([pack([1, 2, 3])], "expected a msgpack map"),
    ([pack({1: "x"})], "not a msgpack"),  # non-string keys are refused while decoding
    ([pack({"op": "dance"})], "unknown op"),
    ([pack({"id": 1})], "unknown op"),
    ([pack({"op": "register", "id": "0", "endpoint": "tcp://a:1", "fingerprint": "f", "incarnation": "i"})],
     "field 'id'"),
    ([pack({"op": "register", "id": True, "endpoint": "tcp://a:1", "fingerprint": "f", "incarnation": "i"})],
     "field 'id'"),
    ([pack({"op": "register", "id": -1, "endpoint": "tcp://a:1", "fingerprint": "f", "incarnation": "i"})],
     "field 'id'"),
    ([pack({"op": "register", "id": 0, "endpoint": "x" * 100_000, "fingerprint": "f", "incarnation": "i"})],
     "field 'endpoint'"),
    ([pack({"op": "register", "id": 0, "endpoint": "no-scheme", "fingerprint": "f", "incarnation": "i"})],
     "field 'endpoint'"),
    ([pack({"op": "register", "id": 0, "endpoint": "tcp://a:1", "fingerprint": "f", "incarnation": "i",
            "public_key": "short"})], "field 'public_key'"),
    ([pack({"op": "register", "id": 0, "endpoint": "tcp://a:1", "fingerprint": "f"})], "needs field 'incarnation'"),
    ([pack({"op": "status", "extra": 1})], "unknown field 'extra'"),
    ([pack({"op": "heartbeat", "id": 0, "incarnation": "i", "round": 1, "state": "sleeping"})], "field 'state'"),
    ([pack({"op": "heartbeat", "id": 0, "incarnation": "i", "round": 2**63, "state": "done"})], "field 'round'"),
    ([pack({"op": "heartbeat", "id": 0, "incarnation": "i", "round": 1, "state": "done", "metrics": {"loss": "x"}})],
     "field 'metrics'"),
    ([pack({"op": "heartbeat", "id": 0, "incarnation": "i", "round": 1, "state": "done",
            "metrics": {f"m{i}": i for i in range(100)}})], "field 'metrics'"),
    ([pack({"op": "leave", "id": 0, "incarnation": "bad incarnation!"})], "field 'incarnation'"),
    ([msgpack.packb({"op": "status", "t": msgpack.ExtType(5, b"x")})], "unknown field"),
    ([pack({"op": "status"}), pack({"op": "status"})], "expected one request frame"),
    ([b"[" * 5000], "not a msgpack"),
]


def test_malformed_requests_answered_and_counted(service: BootstrapService, client: BootstrapClient) -> None:
    for frames, reason in BAD:
        reply = raw_request(service.endpoint, frames)
        assert reply["ok"] is False and reason in reply["reason"], (frames[0][:40], reply)
    beat = {"op": "heartbeat", "id": 0, "incarnation": "i", "round": 1, "state": "done"}
    assert "not registered" in raw_request(service.endpoint, [pack(beat)])["reason"]
    nested = b"\x91" * 100_000  # deeply nested arrays: the decoder's stack limit, not ours
    assert raw_request(service.endpoint, [nested])["ok"] is False
    status = client.status()
    assert status["ok"] and status["bad_requests"] == len(BAD) + 1
    register(client, service, 0, "still-serving")


def test_a_stream_of_bad_requests_is_counted_but_logged_once_per_interval(
        service: BootstrapService, client: BootstrapClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="peernet.bootstrap"):
        for _ in range(200):
            assert raw_request(service.endpoint, [b"not msgpack at all"])["ok"] is False
    assert client.status()["bad_requests"] == 200  # every one counted ...
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # ... one line in the log


def test_req_socket_envelope_is_answered(service: BootstrapService) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    try:
        sock.connect(service.endpoint)
        sock.send(pack({"op": "status"}))
        assert sock.poll(3000, zmq.POLLIN)
        assert msgpack.unpackb(sock.recv(), raw=False, strict_map_key=False)["ok"] is True
    finally:
        sock.close(linger=0)
        ctx.destroy(linger=0)


def test_client_gives_up_quickly_when_nothing_listens() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    with BootstrapClient(address, timeout=0.1, retries=2) as client:
        start = time.monotonic()
        with pytest.raises(BootstrapUnavailable, match=rf"bootstrap at {address} did not answer after 2 tries of 0.1s"):
            client.status()
        assert time.monotonic() - start < 1.5
        with pytest.raises(BootstrapUnavailable, match="no answer"):
            client.wait_start(0, "x", timeout=0.3, poll=0.05)


def test_client_recovers_when_service_comes_up_later(config_path: Path) -> None:
    port = free_port()
    config = load_bootstrap_config(config_path, {"listen": f"tcp://127.0.0.1:{port}"})
    with BootstrapClient(f"tcp://127.0.0.1:{port}", timeout=0.2, retries=3) as client:
        with pytest.raises(BootstrapUnavailable):
            client.status()
        with BootstrapService(config) as svc:
            svc.start_in_thread()
            assert client.status()["ok"]


def test_restart_keeps_registry(config_path: Path) -> None:
    config = load_bootstrap_config(config_path)
    with BootstrapService(config) as first:
        first.start_in_thread()
        with BootstrapClient(first.endpoint, timeout=2.0, retries=1) as client:
            for i in range(3):
                register(client, first, i, f"inc{i}")
            client.heartbeat(2, "inc2", round=9, state="training", metrics={"loss": 1.5})
    with BootstrapService(config) as second:
        second.start_in_thread()
        with BootstrapClient(second.endpoint, timeout=2.0, retries=1) as client:
            status = client.status()
            assert status["started"] and [n["state"] for n in status["nodes"]] == ["registered", "registered",
                                                                                    "training"]
            assert status["nodes"][2]["round"] == 9 and status["nodes"][2]["loss"] == 1.5
            assert set(client.wait_start(1, "inc1", timeout=2.0)) == {0, 1, 2}
            with pytest.raises(BootstrapRejected, match="live process"):
                register(client, second, 0, "impostor")


def test_bind_failure_is_transport_error(config_path: Path) -> None:
    with BootstrapService(load_bootstrap_config(config_path)) as svc:
        taken = load_bootstrap_config(config_path, {"listen": svc.endpoint, "state_dir": "state/other"})
        with pytest.raises(TransportError, match="cannot listen on"):
            BootstrapService(taken)
        with pytest.raises(ConfigError, match="another bootstrap is using this registry"):
            BootstrapService(load_bootstrap_config(config_path))
    BootstrapService(taken).close()  # the failed attempt released its registry lock


def _keyed_run(tmp_path: Path) -> Path:
    """bootstrap.toml naming keys/bootstrap.key_secret and keys/operator.key, over a ring whose nodes have keys."""
    config = write_config(tmp_path)
    public = ensure_keypairs(tmp_path / "keys", ["node0", "node1", "node2", "bootstrap", "operator"])
    save_topology(generate("ring", 3).with_keys({i: public[f"node{i}"].decode() for i in range(3)}),
                  tmp_path / "topology.toml")
    with config.open("a") as fh:
        fh.write('secret_key = "keys/bootstrap.key_secret"\nclient_keys_files = ["keys/operator.key"]\n')
    return config


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")
def test_curve_keys_from_config(tmp_path: Path) -> None:
    config = load_bootstrap_config(_keyed_run(tmp_path))
    assert config.secret_key == str(tmp_path / "keys" / "bootstrap.key_secret")
    assert config.client_keys_files == [str(tmp_path / "keys" / "operator.key")]
    server = load_public_key(tmp_path / "keys" / "bootstrap.key").decode()
    with BootstrapService(config) as svc:
        svc.start_in_thread()
        assert svc.curve
        for name in ("operator", "node1"):  # a status client and any node may ask for status
            public, secret = load_secret_key(tmp_path / "keys" / f"{name}.key_secret")
            curve = ClientCurve(server, public.decode(), secret.decode())
            with BootstrapClient(svc.endpoint, timeout=2.0, retries=1, curve=curve) as client:
                assert client.status()["ok"]
        with BootstrapClient(svc.endpoint, timeout=0.3, retries=1) as plain, pytest.raises(BootstrapUnavailable):
            plain.status()


def test_curve_needs_keys_for_every_node_and_distinct_client_keys(tmp_path: Path) -> None:
    config = _keyed_run(tmp_path)
    save_topology(generate("ring", 3), tmp_path / "topology.toml")  # the keys are gone from the topology
    with pytest.raises(ConfigError, match=r"no public key for node\(s\) \[0, 1, 2\]"):
        BootstrapService(load_bootstrap_config(config))
    _keyed_run(tmp_path / "b")
    (tmp_path / "b" / "keys" / "operator.key").write_text((tmp_path / "b" / "keys" / "node1.key").read_text())
    with pytest.raises(ConfigError, match=r"client key .* is node 1's key"):
        BootstrapService(load_bootstrap_config(tmp_path / "b" / "bootstrap.toml"))
    (tmp_path / "b" / "keys" / "operator.key").unlink()
    with pytest.raises(ConfigError, match=r"operator\.key: public key file not found; run `peernet keygen --cluster"):
        BootstrapService(load_bootstrap_config(tmp_path / "b" / "bootstrap.toml"))


def test_plain_bootstrap_beyond_loopback_warns(config_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="peernet.security"):
        BootstrapService(load_bootstrap_config(config_path)).close()
        assert not caplog.records  # loopback: nobody else can reach it
        # Pretend 127.0.0.1 were a public address, so that no test ever listens beyond loopback.
        monkeypatch.setattr("peernet.security.zap.is_loopback", lambda address: False)
        BootstrapService(load_bootstrap_config(config_path)).close()
    assert "traffic is unauthenticated" in caplog.text and "secret_key and client_keys_files" in caplog.text


def test_status_replaces_non_finite_metrics(service: BootstrapService, client: BootstrapClient) -> None:
    register(client, service, 0, "a")
    client.heartbeat(0, "a", round=3, state="training", metrics={"loss": float("nan"), "grad_norm": float("inf")})
    node = client.status()["nodes"][0]
    assert node["loss"] is None and node["metrics"] == {"loss": None, "grad_norm": None}


def test_loading_op_is_validated_and_refusals_reach_the_node(service: BootstrapService,
                                                             client: BootstrapClient) -> None:
    assert client.loading(0, fingerprint=service.fingerprint, incarnation="a")
    assert client.request("loading", id=1, fingerprint=service.fingerprint, incarnation="b", endpoint="x") == {
        "ok": False, "reason": "bad request: unknown field 'endpoint' for op 'loading'"}
    with pytest.raises(BootstrapRejected, match="fingerprint mismatch"):
        client.loading(1, fingerprint="0" * 16, incarnation="b")
    assert client.status()["nodes"][0]["state"] == "loading"


def test_loading_to_a_bootstrap_without_the_op_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with BootstrapClient("tcp://127.0.0.1:1") as old:
        monkeypatch.setattr(old, "request", lambda op, **f: {"ok": False, "reason": f"bad request: unknown op '{op}'"})
        assert old.loading(0, fingerprint="f", incarnation="a") is False
