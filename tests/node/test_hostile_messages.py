"""A live node under a stream of malformed messages: it logs and counts each, keeps training, ends right."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
import torch
import zmq

from peernet.config import RunSettings, load_run_settings, resolve_topology, run_fingerprint
from peernet.node.launcher import LocalCluster
from peernet.wire.codec import encode, specs_of
from peernet.wire.messages import PROTOCOL_VERSION, Header, header_to_wire
from tests.clusters import LENET, params, reference, wait_all, wait_for_round

ATTACKER_ID = b"99"  # not a member of the topology


def _endpoint(cluster: LocalCluster, node_id: int) -> str:
    return cluster.endpoint(node_id)  # from the endpoint file the node writes once bound


def _malformed(run: str, dim: int, round_: int) -> dict[str, list[list[bytes]]]:
    """One family of bad messages per drop reason, each a list of multipart messages."""
    good = {"x": torch.zeros(dim), "d": torch.zeros(dim)}

    def header(**changes: Any) -> Header:
        fields: dict[str, Any] = dict(version=PROTOCOL_VERSION, run=run, sender=1, round=round_, kind="round",
                                      degree=2, epoch=0, tensors=specs_of(good))
        fields.update(changes)
        return Header(**fields)

    def frames(h: Header, tensors: dict[str, torch.Tensor] | None = None) -> list[bytes]:
        return [bytes(f) for f in encode(h, good if tensors is None else tensors)]

    def raw(h: Header, **wire_changes: Any) -> list[bytes]:
        body = header_to_wire(h)
        body.update(wire_changes)
        return [msgpack.packb(body), *frames(h)[1:]]

    valid = frames(header())
    nan = {"x": torch.full((dim,), float("nan")), "d": torch.zeros(dim)}
    inf = {"x": torch.zeros(dim), "d": torch.full((dim,), float("inf"))}
    half = dim // 2  # float64 of half the length: the right byte count, so the dtype itself is refused
    f64 = {"x": torch.zeros(half, dtype=torch.float64), "d": torch.zeros(half, dtype=torch.float64)}
    short = {"x": torch.zeros(dim - 1), "d": torch.zeros(dim - 1)}
    return {
        "truncated": [valid[:2], valid[:1]],
        "version": [raw(header(), version=PROTOCOL_VERSION + 98)],
        "dtype": [frames(header(tensors=specs_of(f64)), f64)],
        "shape": [frames(header(tensors=specs_of(short)), short)],
        "byte count": [[valid[0], valid[1][:-4], *valid[2:]]],
        "nonfinite": [frames(header(), nan), frames(header(), inf)],
        "oversized": [[*valid, b"\0" * (8 * dim)]],
        "not a neighbour": [frames(header(sender=2))],
        "far future": [frames(header(round=round_ + 1000))],
        "garbage header": [[b"\xc1\xff not msgpack", *valid[1:]]],
        "wrong run": [frames(header(run="0" * 16))],
        "impostor": [valid],  # well-formed, claims to be node 1, but arrives with identity 99
    }


@pytest.mark.slow
def test_node_survives_malformed_messages(make_cluster: Any, tmp_path: Path) -> None:
    settings = RunSettings(**LENET, rounds=60)
    # Without CURVE, so that the attacker reaches the codec: with it, a stranger's messages never get past the
    # handshake and a member's under another id are dropped by the transport (tests/security/test_curve.py).
    cluster: LocalCluster = make_cluster(settings, curve=False)
    cluster.start()
    wait_for_round(cluster, 0, 5)
    s = load_run_settings(cluster.out / "run.toml")
    run = run_fingerprint(s, resolve_topology(s))
    dim = _lenet_dim()
    families = _malformed(run, dim, round_=cluster.rounds_done()[0])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, ATTACKER_ID)
    sock.setsockopt(zmq.SNDTIMEO, 2000)
    sent = 0
    try:
        sock.connect(_endpoint(cluster, 0))
        for _ in range(5):
            for messages in families.values():
                for message in messages:
                    sock.send_multipart(message)
                    sent += 1
        wait_all(cluster)
    finally:
        sock.close(linger=0)
        ctx.term()
    summary = json.loads((cluster.state_dir(0) / "summary.json").read_text())
    dropped = summary["dropped"]
    assert summary["finished"] and summary["final_round"] == 60
    # Every bad message was counted (nothing reached the model), under a reason that names it.
    assert sum(dropped.values()) == sent, dropped
    for code in ("frames", "version", "dtype", "shape", "nonfinite", "size", "sender", "round", "header",
                 "run", "identity"):
        assert dropped.get(code, 0) > 0, (code, dropped)
    log = (cluster.out / "node0.log").read_text()
    assert "invalid messages dropped so far; latest from 99" in log  # the (rate-limited) warning names the sender
    # And the run's result is exactly the undisturbed one.
    assert float((params(cluster) - reference(settings, tmp_path)).abs().max()) <= 1e-6


def _lenet_dim() -> int:
    from peernet.models import build_model
    from peernet.models.flat import ParamLayout

    return ParamLayout.of(build_model("lenet", (1, 28, 28))).numel
