"""A node daemon's Prometheus metrics: a snapshot published once per round, turned into families at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peernet.metrics.memory import peak_rss_mb
from peernet.metrics.prometheus import MetricsServer, SnapshotCollector, counter, gauge
from peernet.wire.messages import DROP_CODES

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from peernet.node.session import Session

#: Messages and connections the transport refused before the exchange saw them (its stats keys; docs/security.md).
TRANSPORT_DROPS = ("auth_mismatch", "bad_identity", "oversize", "refused_handshakes", "failed_handshakes")
#: Why the exchange drops a message: the codec's codes, a header in another node's name, anything unforeseen.
EXCHANGE_DROPS = (*DROP_CODES, "identity", "other")
#: An evaluation record's numbers that the gauges show until the next evaluation.
EVALUATED = ("test_accuracy", "distance_to_optimum", "neighbour_distance")
#: Seconds between two computations of the tracker gauges (a few passes over the model: not every round).
TRACKER_EVERY = 1.0


class NodeMonitor:
    """Serves a daemon's metrics at ``metrics_listen`` (docs/node.md, "Metrics"). The training thread calls
    ``round_done`` and ``evaluated``; they copy a few numbers into a new snapshot and return."""

    def __init__(self, listen: str, node_id: int, state_dir: Path, info: Mapping[str, str]) -> None:
        self.labels = {"node": str(node_id)}
        self.info = dict(info)
        self.collector = SnapshotCollector(self._families)
        self._eval: dict[str, float] = {}
        self._tracker: dict[str, float] = {}
        self._tracker_at = -TRACKER_EVERY
        self.server = MetricsServer(listen, self.collector, state_dir=state_dir)

    def started(self, s: Session) -> None:
        self.collector.publish({"round": s.round, "rounds": s.rounds})

    def round_done(self, s: Session, loss: float) -> None:
        """After a round's bookkeeping: the round, its loss, the exchange's and the transport's counters."""
        now = time.monotonic()
        if now - self._tracker_at >= TRACKER_EVERY:
            self._tracker_at = now
            self._tracker = tracker_gauges(s)
        ex = s.exchange
        self.collector.publish({
            "round": s.round, "rounds": s.rounds, "loss": loss, **self._counters(s),
            "ignored": {(reason,): n for reason, n in ex.ignored.items()},
            "timeouts": {(str(j),): ex.timeouts.get(j, 0) for j in ex.weights},  # zeros too: rate() needs them
            "wait_seconds": ex.wait_seconds, "mix_seconds": ex.mix_seconds, "catchups": s.catchups,
            "rollbacks": s.edges.rollbacks, **self._eval, **self._tracker})

    def counters(self, s: Session) -> None:
        """The traffic and drop counters as they are now (a node that stops between rounds: the last word)."""
        self.collector.publish({**self.collector.snapshot, **self._counters(s)})

    @staticmethod
    def _counters(s: Session) -> dict[str, Any]:
        ex, stats = s.exchange, s.transport.stats
        # Every reason, zeros too (rate() needs them), and any reason counted that is not in the lists.
        drops = {("exchange", reason): ex.dropped.get(reason, 0) for reason in EXCHANGE_DROPS}
        drops |= {("exchange", reason): n for reason, n in ex.dropped.items()}
        drops |= {("transport", key): stats.get(key, 0) for key in TRANSPORT_DROPS}
        return {"sent_bytes": stats.get("bytes_out", 0), "received_bytes": stats.get("bytes_in", 0), "drops": drops,
                "self_over_bound": ex.self_over_bound}

    def evaluated(self, record: Mapping[str, Any]) -> None:
        """An evaluation record: its accuracy or distance to the optimum and distance to the neighbours' models,
        kept until the next."""
        self._eval = {k: float(record[k]) for k in EVALUATED if record.get(k) is not None}
        self.collector.publish({**self.collector.snapshot, **self._eval})

    def close(self) -> None:
        self.server.close()

    def _families(self, snap: Mapping[str, Any]) -> Iterable[Metric]:
        lab = self.labels
        yield from gauge("peernet_node_info", "this node: its run's fingerprint, algorithm and device", 1.0,
                         lab | self.info)
        for key, doc in GAUGES:
            yield from gauge(f"peernet_node_{key}", doc, snap.get(key), lab)
        yield from gauge("peernet_node_peak_rss_bytes", "peak resident memory of the process", peak_rss_mb() * 2**20,
                         lab)
        for key, doc in COUNTERS:
            yield counter(f"peernet_node_{key}", doc, {(): snap.get(key, 0)}, lab)
        yield counter("peernet_node_dropped_messages", "invalid messages dropped, by where and why",
                      snap.get("drops", {}), lab, ("layer", "reason"))
        yield counter("peernet_node_ignored_messages", "valid messages not needed (duplicates, stale resends), by "
                      "reason", snap.get("ignored", {}), lab, ("reason",))
        yield counter("peernet_node_timeouts", "rounds a neighbour was excluded from for missing the deadline",
                      snap.get("timeouts", {}), lab, ("neighbour",))


GAUGES = (("round", "rounds this node has finished (its position in the run)"),
          ("rounds", "rounds in the run"),
          ("loss", "the last round's mini-batch training loss"),
          ("test_accuracy", "test accuracy of this node's model at its last evaluation"),
          ("distance_to_optimum", "quadratic task: distance of this node's model to the optimum, last evaluation"),
          ("neighbour_distance", "mean squared distance to the neighbours' models, last evaluation"),
          ("tracker_norm", "tracking rules: the norm of this node's tracker"),
          ("tracker_sum", "tracking rules: the sum of the tracker's entries; summed over all nodes it is zero "
                          "while the trackers sum to zero"),
          ("tracker_untracked", "tracking rules: |tracker - sum of its edges' flows| / |tracker|: zero up to "
                                "rounding unless a flow was lost"))
COUNTERS = (("sent_bytes", "bytes sent to neighbours"),
            ("received_bytes", "bytes received from neighbours"),
            ("wait_seconds", "seconds spent waiting for the neighbours' messages"),
            ("mix_seconds", "seconds spent mixing"),
            ("catchups", "jumps to the neighbours' round after a stall"),
            ("rollbacks", "edge flows rolled back (dropped or restarted edges)"),
            ("self_over_bound", "rounds whose own tensors failed this node's bound check: not sent, the node stops "
                                "(docs/security.md, Blame)"))


def tracker_gauges(s: Session) -> dict[str, float]:
    """The tracker's norm, entry sum and the share of it no edge flow accounts for ({} for rules without one).

    A node cannot see the others' trackers, so the run's tracker sum error (results.tracker_sum_error) is not
    computable here; the entry sums add up to one projection of it across nodes, and the untracked share
    shows a flow lost on this node's side."""
    tracker = s.tracker
    if tracker is None:
        return {}
    c = tracker.detach().to("cpu").double()
    norm = float(c.norm())
    flows = c.new_zeros(c.shape)
    for flow in s.edges.flow.values():
        flows.add_(flow.to("cpu").double())
    untracked = float((c - flows).norm()) / norm if norm > 0 else 0.0
    return {"tracker_norm": norm, "tracker_sum": float(c.sum()), "tracker_untracked": untracked}
