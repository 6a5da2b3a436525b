"""Payload frames received straight into the receiver's buffers (``recv(place=...)``), over ZeroMQ and memory."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import zmq

from peernet.transport import MemoryHub, MemoryTransport, Transport, ZmqTransport
from peernet.transport.placement import fill

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["memory", "zmq"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[Transport, Transport]]:
    if request.param == "memory":
        hub = MemoryHub()
        rx: Transport = MemoryTransport(1, hub)
        tx: Transport = MemoryTransport(2, hub)
    else:
        rx, tx = ZmqTransport(1), ZmqTransport(2)
    tx.connect(1, rx.endpoint)
    try:
        yield rx, tx
    finally:
        rx.close()
        tx.close()


def _send(tx: Transport, frames: list[bytes]) -> None:
    deadline = time.monotonic() + 10
    while not tx.send(1, frames):  # ZeroMQ refuses until the connection is up
        assert time.monotonic() < deadline
        time.sleep(0.002)


def _address(view: memoryview) -> int:
    return int(np.frombuffer(view, dtype=np.uint8).ctypes.data) if view.nbytes else 0


def test_payload_lands_in_the_offered_views_and_they_are_returned(pair: tuple[Transport, Transport]) -> None:
    rx, tx = pair
    dest = bytearray(10)
    views = [memoryview(dest)[:6], memoryview(dest)[6:]]
    calls: list[tuple[int, bytes]] = []

    def place(sender: int, header: memoryview) -> list[memoryview]:
        calls.append((sender, bytes(header)))
        return views

    _send(tx, [b"head", b"abcdef", b"ghij"])
    got = rx.recv(5.0, place)
    assert got is not None and calls == [(2, b"head")]
    sender, frames = got
    assert sender == 2 and bytes(frames[0]) == b"head" and dest == bytearray(b"abcdefghij")
    assert [_address(f) for f in frames[1:]] == [_address(v) for v in views]  # no copy after the receive


def test_frames_that_do_not_fit_come_back_empty_or_cut(pair: tuple[Transport, Transport]) -> None:
    rx, tx = pair
    dest = bytearray(8)

    def place(sender: int, header: memoryview) -> list[memoryview]:
        return [memoryview(dest)[:4], memoryview(dest)[4:]]

    _send(tx, [b"h", b"0123456789", b"ab", b"extra", b"more"])  # too long, short, then two past the views
    got = rx.recv(5.0, place)
    assert got is not None
    assert [bytes(f) for f in got[1]] == [b"h", b"", b"ab", b"", b""]
    assert dest[4:6] == b"ab"  # nothing was written outside the views offered
    _send(tx, [b"h", b"wxyz"])  # fewer frames than views: the list is short
    got = rx.recv(5.0, place)
    assert got is not None and [bytes(f) for f in got[1]] == [b"h", b"wxyz"]


def test_without_views_the_message_comes_as_frames(pair: tuple[Transport, Transport]) -> None:
    rx, tx = pair
    _send(tx, [b"h", b"payload"])
    got = rx.recv(5.0, lambda sender, header: None)
    assert got is not None and [bytes(f) for f in got[1]] == [b"h", b"payload"]


def test_a_stranger_never_reaches_place() -> None:
    """A routing id that is no node id: the message is read and discarded before ``place`` is asked."""
    with ZmqTransport(1) as rx:
        ctx = zmq.Context()
        try:
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.ROUTING_ID, b"stranger")
            dealer.connect(rx.endpoint)
            dealer.send_multipart([b"h", b"x" * 1000])
            calls: list[int] = []
            assert rx.recv(0.5, lambda sender, header: calls.append(sender)) is None  # type: ignore[func-returns-value]
            assert calls == [] and rx.stats["bad_identity"] == 1
        finally:
            ctx.destroy(linger=0)


def test_fill_bounds_the_frames_it_lists() -> None:
    frames = [b"a"] * 10
    pending = iter(frames)
    left = [len(frames)]

    def read_into(view: memoryview) -> int:
        left[0] -= 1
        return len(next(pending))

    out = fill([], read_into, lambda: left[0] > 0, max_frames=3)
    assert left[0] == 0 and len(out) == 4 and all(f.nbytes == 0 for f in out)
