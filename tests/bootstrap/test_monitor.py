"""The bootstrap's Prometheus endpoint over real HTTP: registrations, requests, bad requests and refusals."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zmq

from peernet.bootstrap.client import BootstrapClient, new_incarnation
from peernet.bootstrap.config import load_bootstrap_config
from peernet.bootstrap.service import BootstrapService
from peernet.errors import BootstrapRejected, ConfigError
from peernet.metrics.prometheus import read_metrics_url
from tests.bootstrap import write_config
from tests.node.test_monitor import scrape, value

pytestmark = pytest.mark.timeout(60)


def test_bootstrap_metrics_count_registrations_and_refusals(tmp_path: Path) -> None:
    config = load_bootstrap_config(write_config(tmp_path), {"metrics_listen": "127.0.0.1:0"})
    with BootstrapService(config) as service:
        service.start_in_thread()
        url = read_metrics_url(config.state_dir)
        assert url is not None
        before = scrape(url)
        assert value(before, "peernet_bootstrap_expected_nodes") == 3
        assert value(before, "peernet_bootstrap_started") == 0
        with BootstrapClient(service.endpoint, timeout=2.0, retries=1) as client:
            client.register(0, "tcp://127.0.0.1:7000", fingerprint=service.fingerprint, incarnation=new_incarnation())
            with pytest.raises(BootstrapRejected):
                client.register(9, "tcp://127.0.0.1:7009", fingerprint=service.fingerprint,
                                incarnation=new_incarnation())
        with zmq.Context() as ctx, ctx.socket(zmq.REQ) as raw:  # not msgpack: a bad request
            raw.linger = 0
            raw.connect(service.endpoint)
            raw.send(b"\xc1garbage")
            assert raw.poll(5000)
            raw.recv()
        deadline = time.monotonic() + 10  # the registry is swept about once a second
        after = scrape(url)
        while value(after, "peernet_bootstrap_registered_nodes") != 1 and time.monotonic() < deadline:
            after = scrape(url)
        assert value(after, "peernet_bootstrap_registered_nodes") == 1
        assert value(after, "peernet_bootstrap_requests_total") >= 3
        assert value(after, "peernet_bootstrap_rejected_total") == 1
        assert value(after, "peernet_bootstrap_bad_requests_total") == 1
    assert read_metrics_url(config.state_dir) is None


def test_bootstrap_metrics_listen_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT") as err:
        load_bootstrap_config(write_config(tmp_path), {"metrics_listen": "localhost"})
    assert err.value.key == "metrics_listen"
