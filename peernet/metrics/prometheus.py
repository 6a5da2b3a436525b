"""Prometheus metrics over HTTP for a daemon or the bootstrap: one registry each, served by prometheus_client."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peernet.atomic import write_atomic
from peernet.errors import ConfigError, TransportError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

#: The file in a state directory that says where the metrics are served (a port left to chance included).
URL_FILE = "metrics_url"


def parse_listen(value: str, key: str = "metrics_listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6; port 0: a free one) as (host, port); ConfigError naming ``key``."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535 or any(c.isspace() for c in host):
        raise ConfigError(f"expected HOST:PORT like 127.0.0.1:9100 (port 0 picks a free one), got {value!r}", key=key)
    return host, int(port)


def read_metrics_url(state_dir: str | Path) -> str | None:
    """Where a daemon or bootstrap with this state directory serves its metrics, or None while it does not."""
    try:
        return (Path(state_dir) / URL_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


class SnapshotCollector:
    """Metric families built at scrape time, in the server's thread, from the latest snapshot its owner
    published. The owner swaps in a whole new dict (one reference assignment), so it never waits for a scrape
    and a scrape never sees half of an update."""

    def __init__(self, build: Callable[[Mapping[str, Any]], Iterable[Metric]]) -> None:
        self._build = build
        self.snapshot: Mapping[str, Any] = {}

    def publish(self, snapshot: Mapping[str, Any]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        return list(self._build(self.snapshot))


class MetricsServer:
    """A dedicated CollectorRegistry (never the library's global one: several daemons may share a process, as in
    tests and in-process clusters) holding ``collector`` and the process's own metrics (resident memory, CPU,
    open files), served at ``http://HOST:PORT/metrics`` from prometheus_client's own thread."""

    def __init__(self, listen: str, collector: Any, *, state_dir: str | Path | None = None,
                 key: str = "metrics_listen") -> None:
        from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

        host, port = parse_listen(listen, key)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        ProcessCollector(registry=self.registry)
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise TransportError(f"cannot serve metrics on {listen} ({key}): {exc}") from None
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self._server.server_port}/metrics"
        self._closed = threading.Event()
        self.state_dir = None if state_dir is None else Path(state_dir)
        if self.state_dir is not None:
            write_atomic(self.state_dir / URL_FILE, self.url + "\n")

    def close(self) -> None:
        """Stop serving and forget the URL file; safe to call twice."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
        if self.state_dir is not None:
            (self.state_dir / URL_FILE).unlink(missing_ok=True)


def gauge(name: str, doc: str, value: float | None, labels: Mapping[str, str]) -> Iterable[Metric]:
    """One gauge sample with ``labels``, or nothing while the value is unknown (None)."""
    from prometheus_client.core import GaugeMetricFamily

    if value is None:
        return []
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), float(value))
    return [family]


def counter(name: str, doc: str, values: Mapping[tuple[str, ...], float], labels: Mapping[str, str],
            extra: tuple[str, ...] = ()) -> Metric:
    """A counter family: one sample per key of ``values`` (the values of the ``extra`` labels), plus ``labels``."""
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, doc, labels=[*labels, *extra])
    for key, value in sorted(values.items()):
        family.add_metric([*labels.values(), *key], float(value))
    return family
