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
    assert f"error: bootstrap at tcp://127.0.0.1:{port} did not answer after 2 tries" in result.output


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
            assert refused.exit_code == 2 and "did not answer" in refused.output
    for args, message in ((["--server-key", public["bootstrap"].decode()], "--server-key needs --secret-key"),
                          (["--secret-key", str(keys / "operator.key_secret")], "needs the bootstrap's public key"),
                          (["--secret-key", str(keys / "operator.key_secret"), "--server-key", "x"],
                           "expected 40 z85 characters"),
                          (["--secret-key", str(keys / "operator.key_secret"), "--server-key", "x",
                            "--server-key-file", "y"], "not both")):
        result = CliRunner().invoke(status, ["--bootstrap", "tcp://127.0.0.1:1", *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
