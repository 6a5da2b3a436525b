"""Background status reports to the bootstrap, off the training path.

The bootstrap is not in the data path: its requests can take seconds to time out when it is down, so
they run in their own thread with their own socket, and training never waits for them. The replies
carry the current address table, from which a restarted neighbour's new endpoint is learnt.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from peernet.bootstrap.client import BootstrapClient
from peernet.errors import PeernetError
from peernet.node.config import NodeConfig

log = logging.getLogger("peernet.node")


class Heartbeat:
    """``update(**fields)`` from the training loop; a thread sends the latest fields every interval."""

    def __init__(self, cfg: NodeConfig, incarnation: str, connect: Callable[[], BootstrapClient], *,
                 announce: Callable[[BootstrapClient], None] | None = None, state: str = "training") -> None:
        """``announce(client)`` runs first in the thread (a node that is still loading registers as such there,
        so the training path never waits for the bootstrap); ``state`` is the one reported until updated."""
        self.cfg = cfg
        self.connect = connect  # a client of its own: ZeroMQ sockets belong to one thread
        self.announce = announce
        self.incarnation = incarnation
        self._fields: dict[str, Any] = {"round": 0, "state": state}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._done = threading.Event()
        self._endpoints: dict[int, str] = {}
        self._updates: dict[int, str] = {}
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{cfg.id}", daemon=True)
        self._reachable = True
        self._leave = False

    def start(self) -> None:
        self._thread.start()

    def update(self, **fields: Any) -> None:
        with self._lock:
            self._fields.update(fields)

    def take_endpoint_updates(self) -> dict[int, str]:
        """Endpoints that changed since the last call (a neighbour restarted on a new port)."""
        with self._lock:
            out, self._updates = self._updates, {}
        return out

    def flush(self) -> None:
        """Send the latest fields now (used at exit so the final state reaches the bootstrap)."""
        self._wake.set()

    def stop(self, *, leave: bool = False) -> None:
        """End the thread after a last report; ``leave``: then tell the bootstrap this node is gone (one try), as a
        node that fails while loading has no other client to do it with."""
        self._leave = leave
        self._done.set()
        self._wake.set()
        self._thread.join(timeout=self.cfg.bootstrap_timeout * (self.cfg.bootstrap_retries + 1) + 2)

    def _loop(self) -> None:
        client = self.connect()
        try:
            if self.announce is not None:
                self.announce(client)
            while True:
                self._send(client)
                if self._done.is_set():
                    if self._leave:
                        self._say_goodbye(client)
                    return
                self._wake.wait(self.cfg.heartbeat_every)
                self._wake.clear()
        finally:
            client.close()

    def _say_goodbye(self, client: BootstrapClient) -> None:
        client.retries = 1  # a courtesy: a dead bootstrap must not hold the exit up
        try:
            client.leave(self.cfg.id, self.incarnation)
        except PeernetError as exc:
            log.debug("leave failed: %s", exc)

    def _send(self, client: BootstrapClient) -> None:
        with self._lock:
            fields = dict(self._fields)
        round_ = int(fields.pop("round"))
        state = str(fields.pop("state"))
        metrics = {k: v for k, v in fields.items() if isinstance(v, int | float) or v is None}
        try:
            reply = client.heartbeat(self.cfg.id, self.incarnation, round=round_, state=state, metrics=metrics)
        except PeernetError as exc:
            if self._reachable:
                log.warning("bootstrap unreachable (%s); training continues without it", exc)
            self._reachable = False
            return
        if not self._reachable:
            log.info("bootstrap reachable again")
        self._reachable = True
        table = reply.get("table") or {}
        with self._lock:
            for j, entry in table.items():
                endpoint = entry.get("endpoint") if isinstance(entry, dict) else None
                if isinstance(j, int) and isinstance(endpoint, str) and self._endpoints.get(j) != endpoint:
                    if j in self._endpoints:
                        self._updates[j] = endpoint
                    self._endpoints[j] = endpoint
