"""The bootstrap's Prometheus metrics: its request counters, and the registry as its last sweep saw it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peernet.metrics.prometheus import MetricsServer, SnapshotCollector, counter, gauge

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

COUNTERS = (("requests", "requests received"),
            ("bad_requests", "requests that broke the protocol (answered ok=false)"),
            ("rejected", "requests the registry refused: unknown id, wrong fingerprint or key, a duplicate, ..."),
            ("refused_handshakes", "CURVE handshakes the ZAP handler refused (a key not allowed)"),
            ("failed_handshakes", "handshakes that failed before the ZAP handler was asked (no CURVE, a wrong "
                                  "server key, a malformed greeting, a connection dropped halfway)"))
GAUGES = (("expected_nodes", "nodes in the run's topology"),
          ("registered_nodes", "nodes registered and not left"),
          ("live_nodes", "registered nodes heard from within node_ttl"),
          ("left_nodes", "nodes that said goodbye"),
          ("started", "1 once every node registered and the run started"),
          ("slowest_round", "the lowest round a registered node reported"),
          ("fastest_round", "the highest round a registered node reported"))


class BootstrapMonitor:
    """Serves at ``listen``; the serving thread calls ``swept`` with the registry's status rows (about once a
    second), and the request counters are read as they are at each scrape."""

    def __init__(self, listen: str, state_dir: str | Path, counters: Mapping[str, int], expected: int) -> None:
        self.counters = counters
        self.collector = SnapshotCollector(self._families)
        self.collector.publish({"expected_nodes": expected, "registered_nodes": 0, "live_nodes": 0, "left_nodes": 0,
                                "started": 0})
        self.server = MetricsServer(listen, self.collector, state_dir=state_dir)

    def swept(self, nodes: Sequence[Mapping[str, Any]], started: bool) -> None:
        present = [n for n in nodes if n["state"] != "unregistered" and not n["left"]]
        rounds = [int(n["round"]) for n in present if n["round"] is not None]
        self.collector.publish({
            "expected_nodes": len(nodes), "registered_nodes": len(present),
            "live_nodes": sum(bool(n["live"]) for n in nodes), "left_nodes": sum(bool(n["left"]) for n in nodes),
            "started": int(started), "slowest_round": min(rounds, default=None),
            "fastest_round": max(rounds, default=None)})

    def close(self) -> None:
        self.server.close()

    def _families(self, snap: Mapping[str, Any]) -> Iterable[Metric]:
        for key, doc in GAUGES:
            yield from gauge(f"peernet_bootstrap_{key}", doc, snap.get(key), {})
        counts = dict(self.counters)  # the serving thread's ints, as they are now
        for key, doc in COUNTERS:
            yield counter(f"peernet_bootstrap_{key}", doc, {(): counts.get(key, 0)}, {})
