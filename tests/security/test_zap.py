"""The ZAP handler's answers, one request at a time, and what counts as loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq
from zmq.utils import z85

from peernet.errors import TransportError
from peernet.security.zap import ZapHandler, is_loopback

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.term()


@pytest.fixture
def handler(context: zmq.Context) -> Iterator[tuple[ZapHandler, bytes]]:
    public, _ = zmq.curve_keypair()
    zap = ZapHandler(context, {public: "4"}, name="test")
    yield zap, public
    zap.close()


def request(mechanism: bytes, *credentials: bytes, version: bytes = b"1.0") -> list[bytes]:
    return [version, b"req-7", b"", b"10.0.0.9", b"", mechanism, *credentials]


def test_allowed_key_gets_its_user_id(handler: tuple[ZapHandler, bytes]) -> None:
    zap, public = handler
    assert zap.answer(request(b"CURVE", z85.decode(public))) == [b"1.0", b"req-7", b"200", b"OK", b"4", b""]
    assert zap.refused == 0


@pytest.mark.parametrize(("frames", "status"), [
    (request(b"CURVE", z85.decode(zmq.curve_keypair()[0])), b"unknown key"),
    (request(b"NULL"), b"CURVE required"),
    (request(b"PLAIN", b"user", b"password"), b"CURVE required"),
    (request(b"CURVE", b"short"), b"CURVE required"),
    (request(b"CURVE", version=b"2.0"), b"unsupported ZAP version"),
    ([b"1.0", b"req-7"], b"malformed ZAP request"),
])
def test_everything_else_is_refused(handler: tuple[ZapHandler, bytes], frames: list[bytes], status: bytes) -> None:
    zap, _ = handler
    reply = zap.answer(frames)
    assert reply[2] == b"400" and reply[3] == status and reply[4] == b""
    assert reply[1] == b"req-7"


def test_bad_allowlist_and_second_handler(handler: tuple[ZapHandler, bytes], context: zmq.Context) -> None:
    with pytest.raises(TransportError, match="not a 40-character z85"):
        ZapHandler(context, {b"short": "1"})
    _, public = handler
    with pytest.raises(TransportError, match="one per ZeroMQ context"):
        ZapHandler(context, {public: "1"})


@pytest.mark.parametrize(("address", "loopback"), [
    ("tcp://127.0.0.1:5550", True), ("tcp://127.0.0.1:*", True), ("tcp://localhost:5550", True),
    ("tcp://[::1]:5550", True), ("ipc:///tmp/x", True), ("inproc://x", True),
    ("tcp://0.0.0.0:5550", False), ("tcp://*:5550", False), ("tcp://10.0.0.3:5600", False),
    ("tcp://[::]:5550", False), ("tcp://node3.example:5600", False), ("tcp://eth0:5600", False),
])
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback
