"""What a daemon talks through (transport, bootstrap client, clock), injectable so one process can host many."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from peernet.bootstrap.client import BootstrapClient, ClientCurve
from peernet.node.config import NodeConfig
from peernet.transport import CurveKeys, Transport, ZmqTransport


def zmq_transport(cfg: NodeConfig, max_msg_size: int, curve: CurveKeys | None) -> Transport:
    """The real transport: a ZeroMQ ROUTER bound at ``cfg.listen``."""
    return ZmqTransport(cfg.id, bind=cfg.listen, advertise=cfg.advertise, max_msg_size=max_msg_size, curve=curve)


def zmq_bootstrap(cfg: NodeConfig, curve: ClientCurve | None) -> BootstrapClient:
    """The real bootstrap client (one per thread: ZeroMQ sockets are not thread-safe)."""
    return BootstrapClient(cfg.bootstrap, timeout=cfg.bootstrap_timeout, retries=cfg.bootstrap_retries, curve=curve)


TransportFactory = Callable[[NodeConfig, int, CurveKeys | None], Transport]
BootstrapFactory = Callable[[NodeConfig, ClientCurve | None], BootstrapClient]


@dataclass(frozen=True)
class Wiring:
    """The daemon's outside world. Defaults are the real ones; an in-process cluster passes a memory transport
    (peernet.transport.MemoryTransport over one hub) and may pass its own clock for the round deadlines."""

    transport: TransportFactory = zmq_transport
    bootstrap: BootstrapFactory = zmq_bootstrap
    clock: Callable[[], float] = field(default=time.monotonic)
