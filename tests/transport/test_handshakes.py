"""Handshakes that fail before the ZAP handler is asked are counted, apart from the ones it refuses."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from peernet.transport import CurveKeys, ZmqTransport

pytestmark = [pytest.mark.timeout(30), pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")]

KEYS = {name: zmq.curve_keypair() for name in ("victim", "member", "stranger")}


@pytest.fixture
def victim() -> Iterator[ZmqTransport]:
    with ZmqTransport(0, curve=CurveKeys(*KEYS["victim"], {1: KEYS["member"][0]})) as t:
        yield t


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def dealer(ctx: zmq.Context, endpoint: str, server_key: bytes | None = None, own: str = "member") -> zmq.Socket:
    """The other side's own code: a raw DEALER, with CURVE when given the server key it believes in."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if server_key is not None:
        sock.curve_serverkey = server_key
        sock.curve_publickey, sock.curve_secretkey = KEYS[own]
    sock.connect(endpoint)
    sock.send(b"hello?")  # queued until a handshake succeeds, which it never does
    return sock


def receive_until(t: ZmqTransport, key: str, within: float = 10.0) -> dict[str, int]:
    """Receive (each with a timeout) until ``t.stats[key]`` is counted; the stats then."""
    deadline = time.monotonic() + within
    while t.stats[key] == 0:
        assert time.monotonic() < deadline, f"{key} never counted: {t.stats}"
        assert t.recv(0.1) is None  # nothing ever gets through
    return dict(t.stats)


def test_a_client_without_curve_is_counted(victim: ZmqTransport, ctx: zmq.Context) -> None:
    sock = dealer(ctx, victim.endpoint)  # kept: a socket collected mid-handshake would fail it by closing
    stats = receive_until(victim, "failed_handshakes")
    assert stats["refused_handshakes"] == 0 and stats["msgs_in"] == 0  # the ZAP handler was never asked
    assert not sock.closed


def test_a_client_with_the_wrong_server_key_is_counted(victim: ZmqTransport, ctx: zmq.Context) -> None:
    sock = dealer(ctx, victim.endpoint, server_key=KEYS["stranger"][0])  # a member's key, not the victim's
    stats = receive_until(victim, "failed_handshakes")
    assert stats["refused_handshakes"] == 0 and stats["msgs_in"] == 0 and not sock.closed


def test_a_key_the_zap_handler_refuses_is_not_counted_twice(victim: ZmqTransport, ctx: zmq.Context) -> None:
    sock = dealer(ctx, victim.endpoint, server_key=KEYS["victim"][0], own="stranger")
    stats = receive_until(victim, "refused_handshakes")
    assert victim.recv(0.2) is None  # libzmq reports the refusal at once; nothing else follows it
    assert stats["refused_handshakes"] == victim.stats["refused_handshakes"] == 1
    assert victim.stats["failed_handshakes"] == 0 and not sock.closed


def test_an_honest_member_is_neither(victim: ZmqTransport) -> None:
    with ZmqTransport(1, curve=CurveKeys(*KEYS["member"], {0: KEYS["victim"][0]})) as member:
        member.connect(0, victim.endpoint)
        deadline = time.monotonic() + 10
        while not member.send(0, [b"round"]):
            assert member.recv(0.01) is None and time.monotonic() < deadline
        got = victim.recv(10.0)
    assert got is not None and got[0] == 1
    assert victim.stats["failed_handshakes"] == victim.stats["refused_handshakes"] == 0
