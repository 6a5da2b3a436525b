"""A live node under a stream of malformed messages: it counts each by reason, keeps training, ends right.

In-process: the attacker is one more transport on the cluster's in-memory network, with an id (99) that is
no member of the topology, so it reaches node 0's exchange exactly as a stranger's ZeroMQ messages would
without CURVE (tests/transport/test_zmq_transport.py checks the socket level: foreign routing ids, oversize).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import torch

from peernet.config import RunSettings, load_run_settings, resolve_topology, run_fingerprint
from peernet.node.inproc import InProcessCluster
from peernet.sim.run import run_simulation
from peernet.transport import MemoryTransport
from peernet.wire.codec import encode, specs_of
from peernet.wire.messages import PROTOCOL_VERSION, Header, header_to_wire
from tests.clusters import params

ATTACKER = 99  # not a member of the topology
QUAD = RunSettings(algorithm="momentum-tracking", topology="ring", nodes=4, dataset="quadratic", heterogeneity=3.0,
                   rounds=400, seed=0)


def malformed(run: str, dim: int, round_: int) -> dict[str, list[list[bytes]]]:
    """One family of bad messages per drop reason, each a list of multipart messages (float64 model)."""
    good = {"x": torch.zeros(dim, dtype=torch.float64), "d": torch.zeros(dim, dtype=torch.float64)}

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
    nan = {"x": torch.full((dim,), float("nan"), dtype=torch.float64), "d": good["d"]}
    inf = {"x": good["x"], "d": torch.full((dim,), float("inf"), dtype=torch.float64)}
    f32 = {"x": torch.zeros(2 * dim), "d": torch.zeros(2 * dim)}  # float32, twice as long: the same byte count
    short = {"x": good["x"][:-1], "d": good["d"][:-1]}
    return {
        "truncated": [valid[:2], valid[:1]],
        "version": [raw(header(), version=PROTOCOL_VERSION + 98)],
        "dtype": [frames(header(tensors=specs_of(f32)), f32)],
        "shape": [frames(header(tensors=specs_of(short)), short)],
        "byte count": [[valid[0], valid[1][:-4], *valid[2:]]],
        "nonfinite": [frames(header(), nan), frames(header(), inf)],
        "oversized": [[*valid, b"\0" * (64 * 1024 + 16 * dim)]],
        "not a neighbour": [frames(header(sender=2))],
        "far future": [frames(header(round=round_ + 1000))],
        "garbage header": [[b"\xc1\xff not msgpack", *valid[1:]]],
        "wrong run": [frames(header(run="0" * 16))],
        "impostor": [valid],  # well-formed, claims to be node 1, but arrives from transport 99
    }


def deliver(attacker: MemoryTransport, message: list[bytes], within: float = 10.0) -> None:
    """Send one message to node 0, waiting while its queue from us is full (as a blocking ZeroMQ send does)."""
    deadline = time.monotonic() + within
    while not attacker.send(0, message):
        assert time.monotonic() < deadline, "node 0 stopped reading"
        time.sleep(0.001)


def test_node_survives_malformed_messages(make_inproc: Callable[..., InProcessCluster], tmp_path: Path) -> None:
    cluster = make_inproc(QUAD, deadline_floor=5.0, deadline_ceiling=10.0)
    cluster.start()
    cluster.wait_round(0, 5)
    s = load_run_settings(cluster.out / "run.toml")
    run = run_fingerprint(s, resolve_topology(s))
    families = malformed(run, s.dim, round_=cluster.nodes[0].daemon.round)
    attacker = MemoryTransport(ATTACKER, cluster.hub)
    attacker.connect(0, "mem://0")
    sent = 0
    for _ in range(5):
        for messages in families.values():
            for message in messages:
                deliver(attacker, message)
                sent += 1
    ends = cluster.wait()
    attacker.close()
    summary = json.loads((cluster.state_dir(0) / "summary.json").read_text())
    dropped = summary["dropped"]
    assert summary["finished"] and summary["final_round"] == QUAD.rounds
    assert cluster.nodes[0].daemon.round == QUAD.rounds
    # Every bad message was counted (nothing reached the model), under a reason that names it.
    assert sum(dropped.values()) == sent, dropped
    for code in ("frames", "version", "dtype", "shape", "nonfinite", "size", "sender", "round", "header",
                 "run", "identity"):
        assert dropped.get(code, 0) > 0, (code, dropped)
    assert summary["faulty_neighbours"] == {}  # the NaNs in node 1's name did not blame node 1
    assert all(not e["dropped"] for i, e in ends.items() if i != 0)
    # And the run's result is exactly the undisturbed one.
    run_simulation(QUAD, tmp_path / "sim", progress=False)
    x_sim = torch.load(tmp_path / "sim" / "final_params.pt", weights_only=True)["params"]
    assert float((params(cluster) - x_sim).abs().max()) <= 1e-12
