"""Tests for ``peernet bootstrap`` and ``peernet status``: CliRunner, plus one real process for signals."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from peernet.bootstrap.client import BootstrapClient
from peernet.bootstrap.config import load_bootstrap_config
from peernet.bootstrap.service import BootstrapService
from peernet.cli.bootstrap_cmd import bootstrap, format_status, human_bytes, status
from peernet.core.topology import generate
from peernet.security.keys import ensure_keypairs
from peernet.topology_files import save_topology
from tests.bootstrap import write_config

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[BootstrapService]:
    svc = BootstrapService(load_bootstrap_config(write_config(tmp_path)))
    svc.start_in_thread()
    yield svc
    svc.close()


def test_status_prints_table(service: BootstrapService) -> None:
    with BootstrapClient(service.endpoint, timeout=2.0, retries=1) as client:
        client.register(0, "tcp://127.0.0.1:7000", fingerprint=service.fingerprint, incarnation="a")
        client.heartbeat(0, "a", round=12, state="training",
                         metrics={"loss": 0.123456, "accuracy": 0.75, "bytes_out": 3 * 1024**2, "bytes_in": 1536})
    result = CliRunner().invoke(status, ["--bootstrap", service.endpoint])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "run not started: 1/3 nodes live"
    assert lines[1].split() == ["node", "state", "round", "loss", "accuracy", "last", "seen", "sent", "received"]
    row = lines[2].split()
    assert row[:5] == ["0", "training", "12", "0.1235", "0.75"]
    assert row[-4:] == ["3.0", "MiB", "1.5", "KiB"]
    assert lines[3].split()[:3] == ["1", "unregistered", "-"]

    as_json = CliRunner().invoke(status, ["--bootstrap", service.endpoint, "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.output)["nodes"][0]["round"] == 12


def test_status_without_bootstrap_fails_clearly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(status, ["--bootstrap", f"tcp://127.0.0.1:{port}", "--timeout", "0.1"])
    assert result.exit_code == 2
    assert f"error: bootstrap at tcp://127.0.0.1:{port}: no answer within 2 tries of 0.1s" in result.output
    assert "nothing accepts connections there: the bootstrap is down" in result.output


def test_format_status_marks_left_and_silent() -> None:
    reply = {"ok": True, "started": True, "expected": 2, "bad_requests": 3, "nodes": [
        {"id": 0, "state": "done", "round": 5, "loss": None, "accuracy": None, "last_seen_age": 1.0,
         "bytes_out": None, "bytes_in": 0, "live": False, "left": True},
        {"id": 1, "state": "training", "round": 4, "loss": 2.0, "accuracy": None, "last_seen_age": 30.0,
         "bytes_out": 5, "bytes_in": 2**40, "live": False, "left": False}]}
    text = format_status(reply)
    assert text.splitlines()[0] == "run started: 0/2 nodes live, 3 bad requests"
    assert "left (done)" in text and "silent (training)" in text and "1.0 TiB" in text
    assert human_bytes(None) == "-" and human_bytes(1023) == "1023 B"


def test_bootstrap_refuses_registry_of_other_run(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    BootstrapService(load_bootstrap_config(config)).close()
    (tmp_path / "run.toml").write_text('dataset = "quadratic"\ntopology = "topology.toml"\nseed = 5\n')
    result = CliRunner().invoke(bootstrap, ["--config", str(config)])
    assert result.exit_code == 2 and "another run" in result.output and "--fresh" in result.output


def _read_line(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    assert proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sel.select(timeout=deadline - time.monotonic()):
                line = proc.stderr.readline()
                if not line:
                    break
                if marker in line:
                    return line
    finally:
        sel.close()
    raise AssertionError(f"no line with {marker!r} within {timeout}s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_bootstrap_process_serves_and_exits_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    config = write_config(tmp_path)
    code = "from peernet.cli.bootstrap_cmd import bootstrap; bootstrap()"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", code, "--config", str(config), "--fresh"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = _read_line(proc, "bootstrap listening on", timeout=30)
        endpoint = line.strip().rsplit(" ", 1)[1]
        assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith(":0")
        with BootstrapClient(endpoint, timeout=2.0, retries=2) as client:
            assert client.status()["expected"] == 3
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_status_with_curve_keys(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    public = ensure_keypairs(tmp_path / "keys", ["node0", "node1", "node2", "bootstrap", "operator", "stranger"])
    save_topology(generate("ring", 3).with_keys({i: public[f"node{i}"].decode() for i in range(3)}),
                  tmp_path / "topology.toml")
    with config.open("a") as fh:
        fh.write('secret_key = "keys/bootstrap.key_secret"\nclient_keys_files = ["keys/operator.key"]\n')
    keys = tmp_path / "keys"
    with BootstrapService(load_bootstrap_config(config)) as svc:
        svc.start_in_thread()
        base = ["--bootstrap", svc.endpoint, "--timeout", "0.3"]
        ok = CliRunner().invoke(status, [*base, "--secret-key", str(keys / "operator.key_secret"),
                                         "--server-key-file", str(keys / "bootstrap.key")])
        assert ok.exit_code == 0, ok.output
        assert ok.output.startswith("run not started: 0/3 nodes live")
        inline = CliRunner().invoke(status, [*base, "--json", "--secret-key", str(keys / "operator.key_secret"),
                                             "--server-key", public["bootstrap"].decode()])
        assert inline.exit_code == 0 and json.loads(inline.output)["expected"] == 3
        for args in ([], ["--secret-key", str(keys / "stranger.key_secret"),
                          "--server-key-file", str(keys / "bootstrap.key")]):
            refused = CliRunner().invoke(status, [*base, *args])  # no CURVE, or a key the bootstrap does not know
            assert refused.exit_code == 2 and "no answer within 2 tries" in refused.output
            # Not "down": what the handshake said.
            assert ("requires CURVE keys" if not args else "CURVE handshake was refused") in refused.output
    for args, message in ((["--server-key", public["bootstrap"].decode()], "--server-key needs --secret-key"),
                          (["--secret-key", str(keys / "operator.key_secret")], "needs the bootstrap's public key"),
                          (["--secret-key", str(keys / "operator.key_secret"), "--server-key", "x"],
                           "expected 40 z85 characters"),
                          (["--secret-key", str(keys / "operator.key_secret"), "--server-key", "x",
                            "--server-key-file", "y"], "not both")):
        result = CliRunner().invoke(status, ["--bootstrap", "tcp://127.0.0.1:1", *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_status_of_a_run_directory_reads_address_and_keys_and_shows_loading(tmp_path: Path) -> None:
    from peernet.bootstrap.client import ClientCurve
    from peernet.config import RunSettings
    from peernet.node.launcher import LocalCluster
    from peernet.security.keys import load_public_key, load_secret_key

    run = LocalCluster.prepare(RunSettings(dataset="quadratic", nodes=3, rounds=5), tmp_path / "run").out
    with BootstrapService(load_bootstrap_config(run / "bootstrap.toml")) as svc:  # CURVE, as `local` runs it
        svc.start_in_thread()
        public, secret = load_secret_key(run / "keys" / "node0.key_secret")
        node0 = ClientCurve(load_public_key(run / "keys" / "bootstrap.key").decode(), public.decode(), secret.decode())
        with BootstrapClient(svc.endpoint, timeout=2.0, retries=1, curve=node0) as client:
            assert client.loading(0, fingerprint=svc.fingerprint, incarnation="a", public_key=public.decode())
        result = CliRunner().invoke(status, ["--run-dir", str(run)])
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[0] == "run not started: 1/3 nodes live"
        assert result.output.splitlines()[2].split()[:3] == ["0", "loading", "0"]


@pytest.mark.parametrize(("args", "needle"), [
    ([], "give --bootstrap ADDRESS or --run-dir DIR"),
    (["--bootstrap", "127.0.0.1:5550"], "'127.0.0.1:5550' has no '<transport>://' (expected tcp://HOST:PORT)"),
    (["--bootstrap", "tcp://127.0.0.1"], "has no port: expected tcp://HOST:PORT"),
])
def test_status_refuses_what_is_no_address(tmp_path: Path, args: list[str], needle: str) -> None:
    result = CliRunner().invoke(status, args)
    assert result.exit_code == 2 and needle in result.output
    missing = CliRunner().invoke(status, ["--run-dir", str(tmp_path)])
    assert missing.exit_code == 2 and "no bootstrap address in bootstrap/endpoint" in missing.output
