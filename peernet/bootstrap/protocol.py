"""The bootstrap's request protocol: one msgpack map per request, every field checked (never pickle)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgpack

from peernet.core.topology_limits import MAX_NODE_ID
from peernet.errors import BadRequest

NODE_STATES = ("loading", "training", "done", "waiting", "stopped")
_ENDPOINT = re.compile(r"[a-z][a-z0-9+.-]*://\S+")
_TOKEN = re.compile(r"[\w.:+-]+")
_Z85 = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise BadRequest(f"expected an integer in [{lo}, {hi}], got {_brief(value)}")
        return value
    return check


def _str(max_len: int, pattern: re.Pattern[str] | None = None) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not 0 < len(value) <= max_len:
            raise BadRequest(f"expected a string of 1 to {max_len} characters, got {_brief(value)}")
        if pattern is not None and not pattern.fullmatch(value):
            raise BadRequest(f"malformed value {_brief(value)}")
        return value
    return check


def _public_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 40 or not set(value) <= _Z85:
        raise BadRequest(f"expected none or a 40-character z85 CURVE key, got {_brief(value)}")
    return value


def _state(value: Any) -> str:
    if value not in NODE_STATES:
        raise BadRequest(f"expected one of {', '.join(NODE_STATES)}, got {_brief(value)}")
    return str(value)


def _metrics(value: Any) -> dict[str, float | int | None]:
    if not isinstance(value, dict) or len(value) > 64:
        raise BadRequest(f"expected a map of at most 64 entries, got {_brief(value)}")
    for key, item in value.items():
        if not isinstance(key, str) or not 0 < len(key) <= 64:
            raise BadRequest(f"metric names must be strings of 1 to 64 characters, got {_brief(key)}")
        ok_int = isinstance(item, int) and not isinstance(item, bool) and abs(item) < 2**63
        if not (item is None or ok_int or isinstance(item, float)):
            raise BadRequest(f"metric {key!r} must be a number or none, got {_brief(item)}")
    return value


def _brief(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


_node_id = _int(0, MAX_NODE_ID)
_incarnation = _str(64, _TOKEN)
# Per op: field -> (validator, required). Unknown fields are refused, like unknown keys in config files.
SCHEMAS: dict[str, dict[str, tuple[Callable[[Any], Any], bool]]] = {
    "register": {"id": (_node_id, True), "endpoint": (_str(256, _ENDPOINT), True), "public_key": (_public_key, False),
                 "fingerprint": (_str(128), True), "incarnation": (_incarnation, True),
                 "replaces": (_incarnation, False)},
    "loading": {"id": (_node_id, True), "public_key": (_public_key, False), "fingerprint": (_str(128), True),
                "incarnation": (_incarnation, True), "replaces": (_incarnation, False)},
    "wait_start": {"id": (_node_id, True), "incarnation": (_incarnation, True)},
    "heartbeat": {"id": (_node_id, True), "incarnation": (_incarnation, True), "round": (_int(0, 2**62), True),
                  "state": (_state, True), "metrics": (_metrics, False)},
    "leave": {"id": (_node_id, True), "incarnation": (_incarnation, True)},
    "status": {},
}


def parse_request(frame: bytes) -> tuple[str, dict[str, Any]]:
    """Decode and validate one request frame into (op, fields); raises BadRequest saying what is wrong."""
    try:
        request = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types (ExtraData, ValueError, StackError, ...)
        raise BadRequest(f"not a msgpack message ({type(exc).__name__})") from None
    if not isinstance(request, dict):
        raise BadRequest(f"expected a msgpack map, got {type(request).__name__}")
    op = request.get("op")
    if not isinstance(op, str) or op not in SCHEMAS:
        raise BadRequest(f"unknown op {_brief(op)}; expected one of {', '.join(SCHEMAS)}")
    schema = SCHEMAS[op]
    fields: dict[str, Any] = {}
    for key in request:
        if key != "op" and key not in schema:
            raise BadRequest(f"unknown field {key[:40]!r} for op {op!r}")
    for key, (check, required) in schema.items():
        if key not in request:
            if required:
                raise BadRequest(f"op {op!r} needs field {key!r}")
            continue
        try:
            fields[key] = check(request[key])
        except BadRequest as exc:
            raise BadRequest(f"field {key!r}: {exc}") from None
    return op, fields
