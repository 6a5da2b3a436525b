"""Compressed round messages from a member: checked against the run's compressed layout before anything is
allocated, their positions checked before they are filed; a bad one is dropped and counted, and the node goes on.

The messages are built with msgpack and raw bytes (not with peernet's encoder), the way a compromised member's own
code would write them: every one passes the header's structural checks.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
import torch

from peernet.core.compressed_gossip import NodeCompressedGossip
from peernet.core.compressors import MessageKey, make_compressor
from peernet.core.edge_copies import EdgeCopies
from peernet.node.exchange import Exchange
from peernet.transport import MemoryHub, MemoryTransport
from peernet.wire.compressed import compressed_layout, from_wire, to_wire
from peernet.wire.messages import PROTOCOL_VERSION, TensorSpec

pytestmark = pytest.mark.timeout(60)

RUN = "0" * 16
P = 8
LAYOUT = {"x": TensorSpec("x", "float64", (P,))}  # top-25% of 8 entries: 2 positions (int32) and 2 values


def message(*tensors: tuple[str, np.ndarray], round_: int = 0, version: int = PROTOCOL_VERSION) -> list[bytes]:
    """A round message from node 1 carrying ``tensors`` (name, array) as they are, dtype and shape included."""
    specs = [{"name": name, "dtype": str(a.dtype), "shape": list(a.shape), "nbytes": a.nbytes} for name, a in tensors]
    head: dict[str, Any] = {"version": version, "run": RUN, "sender": 1, "round": round_, "kind": "round",
                            "degree": 2, "epoch": 0, "tensors": specs, "meta": {"live": True, "full": True}}
    return [msgpack.packb(head), *(a.astype(a.dtype.newbyteorder("<")).tobytes() for _, a in tensors)]


def topk(values: list[float], positions: list[int], index: str = "int32") -> list[bytes]:
    return message(("x.v", np.array(values, dtype=np.float64)), ("x.i", np.array(positions, dtype=index)))


def victim(hub: MemoryHub) -> tuple[Exchange, MemoryTransport]:
    """Node 0 of a top-25% run, neighbours 1 (the compromised member) and 2; and node 1's transport."""
    t0, t1 = MemoryTransport(0, hub), MemoryTransport(1, hub)
    t0.connect(1, t1.endpoint)
    t1.connect(0, t0.endpoint)
    copies = EdgeCopies(NodeCompressedGossip(0, make_compressor("topk", ratio=0.25), 0.5))
    ex = Exchange(t0, 0, RUN, {1: 1 / 3, 2: 1 / 3}, LAYOUT, last_round=100, degrees={1: 2, 2: 2}, copies=copies)
    return ex, t1


@pytest.mark.parametrize(("frames", "why"), [
    (topk([1.0, 2.0], [3, 8]), "compressed"),  # a position past the tensor's end
    (topk([1.0, 2.0], [-1, 3]), "compressed"),  # a negative position
    (topk([1.0, 2.0], [5, 1]), "compressed"),  # not ascending
    (topk([1.0, 2.0], [4, 4]), "compressed"),  # the same position twice (it would be added twice)
    (topk([1.0, 2.0, 3.0], [1, 2, 3]), "shape"),  # three kept entries where the run's settings keep two
    (topk([1.0, 2.0], [1, 2], index="int64"), "dtype"),  # positions of another width than the layout's
    (message(("x.v", np.array([1.0, 2.0], dtype=np.float16)), ("x.i", np.array([1, 2], dtype=np.int32))),
     "dtype"),  # values cast where the run sends them in float64
    (message(("x.v", np.array([1.0, 2.0])), ("x", np.zeros(P))), "layout"),  # half compressed, half full
    (message(("x.v", np.array([1.0, 2.0]))), "layout"),  # the positions missing
    (topk([float("nan"), 2.0], [1, 2]), "nonfinite"),
    (topk([1.0, 2.0], [1, 2])[:2], "frames"),  # a tensor's frame missing
    (message(("x.v", np.array([1.0, 2.0])), ("x.i", np.array([1, 2], dtype=np.int32)), version=1),
     "version"),  # a node of the protocol before compression
])
def test_a_malformed_compressed_message_is_dropped_and_the_node_goes_on(frames: list[bytes], why: str) -> None:
    hub = MemoryHub()
    ex, attacker = victim(hub)
    assert attacker.send(0, frames)
    assert ex.poll(0, timeout=1.0)
    assert ex.dropped == {why: 1} and ex.inbox == {}
    if why in ("compressed", "nonfinite"):
        assert ex.faulty == {1: 1}  # no honest node sends it: blamed on its sender
    # The node goes on: the next well-formed message is filed, into the buffer kept for node 1 and this round.
    assert attacker.send(0, topk([1.0, 2.0], [0, 7]))
    assert ex.poll(0, timeout=1.0)
    filed, declared = ex.inbox[0][1]
    assert set(filed) == {"x.v", "x.i"} and declared.epoch == 0
    assert filed["x.i"].tolist() == [0, 7] and filed["x.v"].tolist() == [1.0, 2.0]
    buffer = ex._buffers[(1, 0)]
    assert filed["x.v"].data_ptr() == buffer["x.v"].data_ptr()
    assert filed["x.i"].data_ptr() == buffer["x.i"].data_ptr()


def test_full_public_copies_are_filed_in_the_dense_buffers_and_bounded() -> None:
    """The message that starts an edge epoch carries the full copies under the dense layout's names; the bound
    on values applies to it as to plain gossip."""
    hub = MemoryHub()
    ex, attacker = victim(hub)
    ex.max_abs = 10.0
    assert attacker.send(0, message(("x", np.full(P, 11.0))))
    assert ex.poll(0, timeout=1.0)
    assert ex.dropped == {"magnitude": 1}
    assert attacker.send(0, message(("x", np.arange(P, dtype=np.float64))))
    assert ex.poll(0, timeout=1.0)
    filed, _ = ex.inbox[0][1]
    assert set(filed) == {"x"} and filed["x"].data_ptr() == ex._buffers[(1, 0)]["x"].data_ptr()


def test_lowrank_factors_travel_as_one_flat_tensor() -> None:
    """A deep model's factors would exceed the wire's 32 tensors: each gossiped tensor's go as one flat tensor,
    cut back into P_0, Q_0, P_1, ... by the layout every node derives from the run's settings."""
    shapes = [(6, 5)] * 20 + [(5,)]  # twenty 6 × 5 matrices: 40 factors, and a bias
    size = 20 * 30 + 5
    compressor = make_compressor("lowrank", rank=1, seed=0, shapes=shapes)
    layout = compressed_layout(compressor, {"x": TensorSpec("x", "float64", (size,)),
                                            "d": TensorSpec("d", "float64", (size,))})
    assert {name: spec.shape for name, spec in layout.items()} == {
        "x.v": (5,), "x.f": (20 * 11,), "d.v": (5,), "d.f": (20 * 11,)}
    v = torch.randn(size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    msg, _ = compressor.compress(v, MessageKey(0, 0, "x"), ())
    wire = to_wire({"x": msg})
    back = from_wire(compressor, wire, {"x": size})["x"]
    assert all(torch.equal(a, b) for a, b in zip(msg.tensors(), back.tensors(), strict=True))
    assert torch.equal(compressor.decode(back, v), compressor.decode(msg, v))


def test_daemons_over_real_sockets_equal_the_simulator_with_compression(tmp_path: Any) -> None:
    """Four daemons over loopback ZeroMQ (CURVE on), compressing, end exactly where the per-node simulator does
    (low rank's flat factors are compared with the simulator in protocol mode, tests/sim/test_compression.py)."""
    import dataclasses

    from peernet.node.inproc import InProcessCluster
    from tests.clusters import FAST, RING8_QUADRATIC, params, reference

    settings = dataclasses.replace(RING8_QUADRATIC, nodes=4, rounds=150, compression="topk", compression_ratio=0.25)
    with InProcessCluster(settings, tmp_path / "run", {**FAST, "deadline_floor": 10.0, "deadline_ceiling": 20.0},
                          network="zmq", curve=True) as cluster:
        cluster.start()
        ends = cluster.wait(timeout=90)
    assert all(e["finished"] and e["timeouts"] == {} and e["rollbacks"] == 0 for e in ends.values()), ends
    assert torch.equal(params(cluster), reference(settings, tmp_path))
