"""Every reason a node counts a drop or a refusal for is exported by reason: Prometheus, heartbeat, summary."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from peernet.node import daemon, exchange
from peernet.node.monitor import EXCHANGE_DROPS, TRANSPORT_DROPS, NodeMonitor
from peernet.transport import ZmqTransport, zmq_transport
from peernet.wire.messages import DROP_CODES

pytestmark = pytest.mark.timeout(30)

#: Transport stats that are traffic, not refusals.
TRAFFIC = {"bytes_out", "bytes_in", "msgs_out", "msgs_in", "send_would_block"}


def counted(module: Any, pattern: str) -> set[str]:
    """The literal reasons ``module``'s source counts with ``pattern`` (one group: the reason)."""
    return set(re.findall(pattern, Path(module.__file__).read_text()))


def test_every_reason_counted_is_a_listed_reason() -> None:
    dropped_for = counted(exchange, r'self\._drop\("(\w+)"')
    assert dropped_for and dropped_for <= set(EXCHANGE_DROPS)
    assert set(DROP_CODES) <= set(EXCHANGE_DROPS)
    with ZmqTransport(0) as t:
        refusals = set(t.stats) - TRAFFIC
    refusals |= counted(zmq_transport, r'self\.stats\["(\w+)"\] \+= 1') - TRAFFIC
    assert refusals == set(TRANSPORT_DROPS)
    assert set(TRANSPORT_DROPS) <= set(daemon.TRANSPORT_COUNTERS)  # the heartbeat and summary.json carry them


def session() -> SimpleNamespace:
    ex = SimpleNamespace(dropped=Counter({"size": 2, "unforeseen": 1}), ignored=Counter(), timeouts=Counter(),
                         weights={1: 0.5}, wait_seconds=0.0, mix_seconds=0.0, self_over_bound=1)
    return SimpleNamespace(exchange=ex, transport=SimpleNamespace(stats={"failed_handshakes": 3, "bytes_out": 5}),
                           round=4, rounds=10, tracker=None, catchups=0, edges=SimpleNamespace(rollbacks=0))


def samples(mon: NodeMonitor) -> dict[str, dict[tuple[str, ...], float]]:
    """name -> {label values after the node's: value} of every sample the collector gives a scrape."""
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for family in mon.collector.collect():
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(v for k, v in s.labels.items() if k != "node")] = s.value
    return out


def test_prometheus_exports_every_reason_and_self_over_bound(tmp_path: Path) -> None:
    mon = NodeMonitor("127.0.0.1:0", 0, tmp_path, {"fingerprint": "f"})
    try:
        mon.round_done(session(), 0.5)  # type: ignore[arg-type]
        got = samples(mon)
    finally:
        mon.close()
    drops = got["peernet_node_dropped_messages_total"]
    expected = {("exchange", r) for r in EXCHANGE_DROPS} | {("transport", r) for r in TRANSPORT_DROPS}
    assert expected | {("exchange", "unforeseen")} == set(drops)  # zeros too, and a reason no list foresaw
    assert drops["exchange", "size"] == 2 and drops["transport", "failed_handshakes"] == 3
    assert got["peernet_node_self_over_bound_total"] == {(): 1.0}
