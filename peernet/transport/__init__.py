"""Transports move opaque multipart frame lists between node ids: ZeroMQ on the wire, queues in memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from peernet.transport.memory import MemoryHub, MemoryTransport
from peernet.transport.placement import Place
from peernet.transport.zmq_transport import CurveKeys, ZmqTransport, decode_routing_id, encode_routing_id

__all__ = [
    "CurveKeys",
    "MemoryHub",
    "MemoryTransport",
    "Place",
    "Transport",
    "ZmqTransport",
    "decode_routing_id",
    "encode_routing_id",
]


@runtime_checkable
class Transport(Protocol):
    """What the node daemon uses; synchronous, driven from one loop thread.

    ``stats`` counts bytes_out, bytes_in, msgs_out, msgs_in (payload frames only), send_would_block,
    bad_identity (inbound routing id that is no node id), oversize (inbound message over max_msg_size or
    with too many frames), auth_mismatch (CURVE: inbound routing id that is not the node the connection's
    key belongs to), refused_handshakes (CURVE: connections the ZAP handler turned away) and failed_handshakes
    (connections whose handshake failed before the ZAP handler was asked: no CURVE, a wrong server key).
    """

    node_id: int
    endpoint: str
    stats: dict[str, int]

    def connect(self, peer_id: int, endpoint: str) -> None:
        """(Re)dial one peer; a changed endpoint replaces the old connection."""
        ...

    def disconnect(self, peer_id: int) -> None:
        """Drop the connection to one peer and anything still queued for it."""
        ...

    def send(self, peer_id: int, frames: Sequence[bytes | memoryview]) -> bool:
        """Queue one message without blocking; False if the peer is not connected or its queue is full."""
        ...

    def recv(self, timeout: float, place: Place | None = None) -> tuple[int, list[memoryview]] | None:
        """Wait up to ``timeout`` seconds for one message: (sender id, frames), or None on timeout.

        With ``place``, the payload frames go into the views ``place(sender, header)`` returns (placement.fill).
        """
        ...

    def close(self) -> None:
        """Release everything; idempotent."""
        ...
