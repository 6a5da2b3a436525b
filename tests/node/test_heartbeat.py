"""The heartbeat thread announces a loading node first, reports its state, and can leave on the way out."""

from __future__ import annotations

import threading
from typing import Any

from peernet.bootstrap.client import BootstrapClient
from peernet.node.config import NodeConfig
from peernet.node.heartbeat import Heartbeat


class Recorder(BootstrapClient):
    """Records requests instead of sending them; ``seen`` is set once a heartbeat of ``state`` went out."""

    def __init__(self, state: str) -> None:
        super().__init__("tcp://127.0.0.1:1")
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.state, self.seen = state, threading.Event()

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self.calls.append((op, fields))
        if op == "heartbeat" and fields["state"] == self.state:
            self.seen.set()
        return {"ok": True, "table": {}}


def test_a_loading_heartbeat_announces_reports_and_leaves() -> None:
    cfg = NodeConfig(id=3, run="run.toml", heartbeat_every=0.05)
    client = Recorder("waiting")
    beat = Heartbeat(cfg, "inc", lambda: client, state="loading",
                     announce=lambda c: c.request("loading", id=3, incarnation="inc"))
    beat.start()
    beat.update(state="waiting")
    assert client.seen.wait(10)
    beat.stop(leave=True)
    ops = [op for op, _ in client.calls]
    assert ops[0] == "loading" and ops[-1] == "leave" and ops[1:-1] == ["heartbeat"] * (len(ops) - 2)
    assert {f["state"] for op, f in client.calls if op == "heartbeat"} <= {"loading", "waiting"}
