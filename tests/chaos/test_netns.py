"""The network lab really isolates: traffic flows, a partition or 100% loss stops it, heal restores it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from peernet.chaos.netns import NetnsLab, check_available

pytestmark = pytest.mark.skipif(check_available() is not None, reason=f"no network lab: {check_available()}")

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7100)); s.listen(16); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"pong"); c.close()
"""
CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], 7100), timeout=1.0); print(c.recv(4).decode())
except OSError as exc:
    print("unreachable", type(exc).__name__)
"""


def reach(lab: NetnsLab, src: str, dst: str) -> bool:
    out = subprocess.run([*lab.exec_prefix(src), sys.executable, "-c", CLIENT, lab.address(dst)],
                         capture_output=True, text=True, timeout=20)
    return out.stdout.strip() == "pong"


def test_partition_loss_and_heal() -> None:
    with NetnsLab(["a", "b"], tag=f"pnt{int(time.time()) % 100000}") as lab:
        server = subprocess.Popen([*lab.exec_prefix("b"), sys.executable, "-c", SERVER, lab.address("b")],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            assert reach(lab, "a", "b")
            lab.partition([["a"], ["b"]])
            assert not reach(lab, "a", "b")
            lab.heal()
            assert reach(lab, "a", "b")
            lab.set_loss(100.0, ["b"])
            assert not reach(lab, "a", "b")
            lab.set_loss(0.0)
            lab.set_rate("10mbit")
            qdisc = subprocess.run([*lab.exec_prefix("a"), "tc", "qdisc", "show", "dev", "eth0"], capture_output=True,
                                   text=True).stdout
            assert "tbf" in qdisc and "10Mbit" in qdisc
            assert reach(lab, "a", "b")
        finally:
            server.kill()
            server.wait()
        names = list(lab.created)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert names and not any(name in listed for name in names)  # everything it made is gone
