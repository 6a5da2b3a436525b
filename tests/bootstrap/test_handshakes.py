"""The bootstrap counts handshakes that failed before its ZAP handler was asked, and the ones it refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zmq

from peernet.bootstrap.client import BootstrapClient, ClientCurve
from peernet.bootstrap.config import load_bootstrap_config
from peernet.bootstrap.service import BootstrapService
from peernet.metrics.prometheus import read_metrics_url
from peernet.security.keys import load_public_key, load_secret_key
from tests.bootstrap.test_service import _keyed_run
from tests.node.test_monitor import scrape, value

pytestmark = [pytest.mark.timeout(30), pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")]


def test_failed_and_refused_handshakes_reach_status_and_metrics(tmp_path: Path) -> None:
    config = load_bootstrap_config(_keyed_run(tmp_path), {"metrics_listen": "127.0.0.1:0"})
    server = load_public_key(tmp_path / "keys" / "bootstrap.key")
    public, secret = load_secret_key(tmp_path / "keys" / "operator.key_secret")
    operator = ClientCurve(server.decode(), public.decode(), secret.decode())
    with BootstrapService(config) as svc, zmq.Context() as ctx:
        svc.start_in_thread()
        plain = ctx.socket(zmq.REQ)  # the other side's own code: no CURVE at all
        stranger = ctx.socket(zmq.REQ)  # CURVE with the right server key, but a key nobody allowed
        stranger.curve_serverkey = server
        stranger.curve_publickey, stranger.curve_secretkey = zmq.curve_keypair()
        for sock in (plain, stranger):
            sock.linger = 0
            sock.connect(svc.endpoint)
            sock.send(b"status?")
        with BootstrapClient(svc.endpoint, timeout=2.0, retries=1, curve=operator) as client:
            deadline = time.monotonic() + 10
            status = client.status()
            while not (status["failed_handshakes"] and status["refused_handshakes"]):
                assert time.monotonic() < deadline, status
                status = client.status()
        for sock in (plain, stranger):
            sock.close(linger=0)
        assert status["refused_handshakes"] == 1 and status["bad_requests"] == 0
        url = read_metrics_url(config.state_dir)
        assert url is not None
        metrics = scrape(url)
    assert value(metrics, "peernet_bootstrap_failed_handshakes_total") >= 1
    assert value(metrics, "peernet_bootstrap_refused_handshakes_total") == 1
