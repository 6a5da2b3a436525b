"""A running daemon's Prometheus endpoint over real HTTP: the text parses, its round advances (in-process cluster)."""

from __future__ import annotations

import dataclasses
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from peernet.errors import ConfigError
from peernet.metrics.prometheus import parse_listen, read_metrics_url
from peernet.node.inproc import InProcessCluster
from tests.clusters import RING8_QUADRATIC

QUAD = dataclasses.replace(RING8_QUADRATIC, nodes=4, rounds=1_000_000, eval_every=2)  # until the test stops it


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """name -> [(labels, value)] of every sample, as Prometheus's own text parser reads the page."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    (_, v), = samples[name]
    return v


def test_a_running_daemon_serves_metrics_and_its_round_advances(make_inproc: Callable[..., InProcessCluster]
                                                                 ) -> None:
    cluster = make_inproc(QUAD, per_node={0: {"metrics_listen": "127.0.0.1:0"}})
    cluster.start()
    cluster.wait_round(0, 3, 60)
    url = read_metrics_url(cluster.state_dir(0))
    assert url is not None and url.startswith("http://127.0.0.1:") and read_metrics_url(cluster.state_dir(1)) is None
    first = scrape(url)
    cluster.wait_round(0, int(value(first, "peernet_node_round")) + 5, 60)
    second = scrape(url)
    assert value(second, "peernet_node_round") > value(first, "peernet_node_round") >= 3
    assert value(second, "peernet_node_sent_bytes_total") > value(first, "peernet_node_sent_bytes_total") > 0
    assert value(second, "peernet_node_received_bytes_total") > 0
    assert value(second, "peernet_node_rounds") == QUAD.rounds and value(second, "peernet_node_loss") > 0
    assert value(second, "peernet_node_wait_seconds_total") >= 0
    assert value(second, "peernet_node_distance_to_optimum") > 0  # evaluated every other round
    assert value(second, "peernet_node_neighbour_distance") > 0
    assert value(second, "process_resident_memory_bytes") > 1e6
    # Momentum Tracking's tracker: every flow of node 0's edges accounted for (float64: rounding only).
    assert value(second, "peernet_node_tracker_norm") > 0 and value(second, "peernet_node_tracker_untracked") < 1e-9
    drops = {(labels["layer"], labels["reason"]) for labels, _ in second["peernet_node_dropped_messages_total"]}
    assert ("transport", "oversize") in drops
    (info, _), = second["peernet_node_info"]
    assert info["node"] == "0" and info["algorithm"] == "momentum-tracking" and info["device"] == "cpu"
    cluster.stop()
    assert read_metrics_url(cluster.state_dir(0)) is None  # the server is gone with the daemon
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


@pytest.mark.parametrize("bad", ["9100", "host:", ":9100", "127.0.0.1:99999", "a b:1", "127.0.0.1:-1"])
def test_metrics_listen_must_be_host_and_port(bad: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT") as err:
        parse_listen(bad)
    assert err.value.key == "metrics_listen"
    assert parse_listen("[::1]:0") == ("::1", 0)
