"""MemoryTransport: the same contract as ZmqTransport, in one process and across threads."""

from __future__ import annotations

import threading
import time

import pytest

from peernet.errors import TransportError
from peernet.transport import MemoryHub, MemoryTransport, Transport

pytestmark = pytest.mark.timeout(30)


def pair(hub: MemoryHub, **kwargs: int) -> tuple[MemoryTransport, MemoryTransport]:
    a, b = MemoryTransport(1, hub, **kwargs), MemoryTransport(2, hub, **kwargs)
    a.connect(2, b.endpoint)
    b.connect(1, a.endpoint)
    return a, b


def test_exchange_both_ways_and_stats() -> None:
    hub = MemoryHub()
    a, b = pair(hub)
    assert isinstance(a, Transport) and a.endpoint == "mem://1"
    buf = bytearray(b"\x01" * 3_000_000)
    assert a.send(2, [b"header", memoryview(buf)])
    buf[0] = 0xFF  # the sender reusing its buffer must not change what was sent
    got = b.recv(1.0)
    assert got is not None
    sender, frames = got
    assert sender == 1 and bytes(frames[0]) == b"header" and bytes(frames[1]) == b"\x01" * 3_000_000
    assert b.send(1, [b"back"])
    got = a.recv(1.0)
    assert got is not None and got[0] == 2 and bytes(got[1][0]) == b"back"
    assert a.stats["msgs_out"] == 1 and a.stats["bytes_out"] == 3_000_006 and b.stats["bytes_in"] == 3_000_006
    assert a.stats["msgs_in"] == 1 and a.stats["bytes_in"] == 4
    a.close()
    b.close()


def test_recv_timeout_and_absent_peer() -> None:
    hub = MemoryHub()
    a = MemoryTransport(1, hub)
    start = time.monotonic()
    assert a.recv(0.1) is None
    assert a.recv(0.0) is None
    assert time.monotonic() - start < 2.0
    assert a.send(9, [b"x"]) is False  # never connected
    a.connect(9, "mem://9")
    assert a.send(9, [b"x"]) is False  # connected, but nothing runs there
    a.close()


def test_full_pipe_refuses_and_other_senders_still_get_through() -> None:
    hub = MemoryHub()
    a, b = pair(hub, hwm=3)
    c = MemoryTransport(3, hub, hwm=3)
    c.connect(2, b.endpoint)
    assert [a.send(2, [b"m"]) for _ in range(5)] == [True, True, True, False, False]
    assert a.stats["send_would_block"] == 2
    assert c.send(2, [b"from c"])  # per-pipe bound, as in ZeroMQ
    assert b.recv(1.0) is not None
    assert a.send(2, [b"m"])  # one slot freed
    for t in (a, b, c):
        t.close()


def test_restart_takes_over_endpoint_and_oversize_dropped() -> None:
    hub = MemoryHub()
    a, b1 = pair(hub)
    b2 = MemoryTransport(2, hub, max_msg_size=10)  # a restarted node 2 takes over before the old one is gone
    b1.close()  # the late close of the old instance must not unbind the new one
    assert hub.lookup("mem://2") is b2
    assert a.send(2, [b"0123456789abc"])
    assert a.send(2, [b"ok"])
    got = b2.recv(1.0)
    assert got is not None and bytes(got[1][0]) == b"ok" and b2.stats["oversize"] == 1
    b2.close()
    assert a.send(2, [b"lost"]) is False
    a.close()


def test_threads_and_close_wakes_receiver() -> None:
    hub = MemoryHub()
    a, b = pair(hub, hwm=2)
    n = 200
    received: list[int] = []

    def consume() -> None:
        while len(received) < n:
            got = b.recv(5.0)
            assert got is not None
            received.append(int(bytes(got[1][0])))

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    for i in range(n):
        while not a.send(2, [str(i).encode()]):
            time.sleep(0.001)
    thread.join(10.0)
    assert not thread.is_alive() and received == list(range(n))

    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            b.recv(10.0)
        except TransportError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=blocked, daemon=True)
    waiter.start()
    # Close only once the waiter is blocked inside recv: it then waits on the transport's condition.
    deadline = time.monotonic() + 5
    while not b._cond._waiters:  # type: ignore[attr-defined]  # CPython's Condition keeps its waiters here
        assert time.monotonic() < deadline, "the waiter never blocked in recv"
        waiter.join(0.001)
    b.close()
    waiter.join(5.0)
    assert not waiter.is_alive() and len(errors) == 1
    a.close()
    a.close()
    with pytest.raises(TransportError):
        a.send(2, [b"x"])
    with pytest.raises(TransportError):
        a.connect(2, "tcp://127.0.0.1:1")
