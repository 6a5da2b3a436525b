"""Tests for the wire codec: round trips, zero-copy framing and every rejection with its drop code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
import torch
import zmq

from peernet.errors import CodecError, WireError
from peernet.wire import (
    CHUNK_BYTES,
    DROP_CODES,
    PROTOCOL_VERSION,
    Expectation,
    Header,
    TensorSpec,
    check_finite,
    decode,
    decode_header,
    encode,
    error_code,
    specs_of,
)
from peernet.wire.messages import MAX_HEADER_BYTES

RUN = "0123456789abcdef" * 4
DELETE = object()
Frames = list[Any]


def header_for(tensors: dict[str, torch.Tensor], kind: str = "round", **fields: Any) -> Header:
    base: dict[str, Any] = {"version": PROTOCOL_VERSION, "run": RUN, "sender": 3, "round": 7, "kind": kind}
    base |= {"degree": 2, "epoch": 1, "tensors": specs_of(tensors), "meta": {}}
    return Header(**(base | fields))


def expectation(layout: dict[str, TensorSpec] | None = None, **fields: Any) -> Expectation:
    base: dict[str, Any] = {"run": RUN, "senders": frozenset({1, 3}), "layout": layout, "max_bytes": 1 << 30}
    return Expectation(**(base | fields))


def layout_of(tensors: dict[str, torch.Tensor]) -> dict[str, TensorSpec]:
    return {s.name: s for s in specs_of(tensors)}


def rejected(frames: Frames, expect: Expectation, out: dict[str, torch.Tensor] | None = None) -> CodecError:
    with pytest.raises(CodecError) as info:
        decode(frames, expect, out)
    assert error_code(info.value) in DROP_CODES
    return info.value


def _update(target: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if value is DELETE:
            del target[key]
        else:
            target[key] = value


def repack(frames: Frames, **changes: Any) -> Frames:
    """Re-encode frame 0 with some header fields changed (DELETE removes a field)."""
    obj = msgpack.unpackb(bytes(frames[0]))
    _update(obj, changes)
    return [msgpack.packb(obj), *frames[1:]]


def respec(frames: Frames, index: int, **changes: Any) -> Frames:
    """Re-encode frame 0 with fields of tensor spec ``index`` changed (DELETE removes a field)."""
    obj = msgpack.unpackb(bytes(frames[0]))
    _update(obj["tensors"][index], changes)
    return [msgpack.packb(obj), *frames[1:]]


# --- round trips ---------------------------------------------------------------------------------------------------

ROUND_TRIPS: dict[str, Callable[[], dict[str, torch.Tensor]]] = {
    "float32": lambda: {"x": torch.randn(5, 7)},
    "float64": lambda: {"x": torch.randn(3, 2, 4, dtype=torch.float64)},
    "momentum_tracking_x_and_d": lambda: {"x": torch.randn(1000), "d": torch.randn(1000)},
    "three_mb_multi_chunk": lambda: {"x": torch.randn(3 * CHUNK_BYTES // 4 + 5)},
    "exactly_one_mib": lambda: {"x": torch.randn(CHUNK_BYTES // 8, dtype=torch.float64)},
    "empty": lambda: {"x": torch.empty(0)},
    "empty_2d_and_scalar": lambda: {"e": torch.empty(4, 0, dtype=torch.float64), "s": torch.tensor(2.5)},
}


@pytest.mark.parametrize("case", ROUND_TRIPS)
@pytest.mark.parametrize("preallocated", [False, True])
def test_round_trip(case: str, preallocated: bool) -> None:
    tensors = ROUND_TRIPS[case]()
    header = header_for(tensors, meta={"loss": 0.25})
    frames = encode(header, tensors)
    out = {name: torch.full_like(t, -1.0) for name, t in tensors.items()} if preallocated else None
    ptrs = {name: t.data_ptr() for name, t in (out or {}).items()}
    message = decode(frames, expectation(layout_of(tensors)), out)
    assert message.header == header
    assert set(message.tensors) == set(tensors)
    for name, sent in tensors.items():
        got = message.tensors[name]
        assert got.dtype == sent.dtype and got.shape == sent.shape
        assert torch.equal(got, sent)
        if out is not None:
            assert got is out[name] and got.data_ptr() == ptrs[name]  # filled in place, no reallocation
        elif sent.numel():
            assert got.data_ptr() != sent.data_ptr()


def test_chunking_layout() -> None:
    cases = [(3 * CHUNK_BYTES + 20, [CHUNK_BYTES] * 3 + [20]), (CHUNK_BYTES, [CHUNK_BYTES]), (0, [0])]
    for nbytes, lengths in cases:
        tensors = {"x": torch.zeros(nbytes // 4)}
        frames = encode(header_for(tensors), tensors)
        assert [memoryview(f).nbytes for f in frames[1:]] == lengths


def test_encode_is_zero_copy() -> None:
    x = torch.randn(CHUNK_BYTES // 4 + 10)
    frames = encode(header_for({"x": x}), {"x": x})
    assert all(isinstance(f, memoryview) for f in frames[1:])
    assert np.frombuffer(frames[1], np.uint8).ctypes.data == x.data_ptr()
    assert np.frombuffer(frames[2], np.uint8).ctypes.data == x.data_ptr() + CHUNK_BYTES


def test_encode_copies_non_contiguous_tensors_and_round_window_accepts() -> None:
    x = torch.randn(4, 6).t()
    frames = encode(header_for({"x": x}, round=11), {"x": x})
    assert torch.equal(decode(frames, expectation(current_round=10, max_round_ahead=1)).tensors["x"], x)


def test_ping_without_tensors_and_meta_types() -> None:
    meta = {"endpoint": "tcp://10.0.0.3:5555", "ok": True, "n": -4, "loss": 1.5, "none": None, "name": "noeud-é"}
    header = header_for({}, kind="hello", meta=meta)
    frames = encode(header, {})
    assert len(frames) == 1
    message = decode(frames, expectation(layout_of({"x": torch.zeros(3)})))
    assert message.tensors == {} and message.header.meta == meta
    assert type(message.header.meta["ok"]) is bool
    assert decode_header(frames[0], expectation()) == header


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, zmq.Frame])
def test_decode_accepts_any_buffer(wrap: Callable[[Any], Any]) -> None:
    tensors = {"x": torch.randn(10), "d": torch.randn(10)}
    frames = [wrap(bytes(f)) for f in encode(header_for(tensors), tensors)]
    assert torch.equal(decode(frames, expectation()).tensors["d"], tensors["d"])


def test_over_zeromq_without_copies() -> None:
    tensors = {"x": torch.randn(CHUNK_BYTES // 4 + 3), "d": torch.randn(17)}
    out = {name: torch.zeros_like(t) for name, t in tensors.items()}
    ctx = zmq.Context()
    try:
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        a.linger = b.linger = 0
        b.rcvtimeo = 5000
        b.bind("inproc://codec-test")
        a.connect("inproc://codec-test")
        a.send_multipart(encode(header_for(tensors), tensors), copy=False)
        received = b.recv_multipart(copy=False)
        decode(received, expectation(layout_of(tensors)), out)
        assert all(torch.equal(out[n], tensors[n]) for n in tensors)
    finally:
        ctx.destroy(linger=0)


def test_encode_rejects_bad_input() -> None:
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="specs_of"):
        encode(header_for({"x": torch.zeros(4)}), {"x": x})
    with pytest.raises(ValueError, match="dtype"):
        specs_of({"x": torch.zeros(3, dtype=torch.uint8)})
    with pytest.raises(ValueError, match="'meta'"):
        encode(header_for({"x": x}, meta={"bad": [1, 2]}), {"x": x})
    with pytest.raises(ValueError, match="'run'"):
        encode(header_for({"x": x}, run="not-hex"), {"x": x})
    with pytest.raises(ValueError, match="carries no tensors"):
        encode(header_for({"x": x}, kind="ping"), {"x": x})
    with pytest.raises(ValueError, match="does not pack"):
        encode(header_for({}, meta={"a": "\ud800"}), {})


def test_largest_valid_header_round_trips() -> None:
    # Every limit at once, with 4-byte UTF-8 chars: the msgpack byte limits must not be tighter than the char limits.
    meta: dict[str, Any] = {f"{i:02d}" + "🙂" * 62: "🙂" * 256 for i in range(32)}
    tensors = {f"t{i:02d}" + "é" * 12: torch.zeros([1] * 8) for i in range(32)}
    header = header_for(tensors, meta=meta)
    frames = encode(header, tensors)
    assert len(frames[0]) <= MAX_HEADER_BYTES
    assert decode(frames, expectation()).header == header


# --- rejections ----------------------------------------------------------------------------------------------------

TENSORS = {"x": torch.arange(CHUNK_BYTES // 4 + 6, dtype=torch.float32), "d": torch.arange(12.0).reshape(4, 3)}
LAYOUT = layout_of(TENSORS)
GOOD = encode(header_for(TENSORS), TENSORS)


def _chunk(frames: Frames, index: int, data: bytes) -> Frames:
    return [*frames[:index], data, *frames[index + 1 :]]


# name -> (frames, expectation, expected code)
REJECTIONS: dict[str, tuple[Frames, Expectation, str]] = {
    "no_frames": ([], expectation(LAYOUT), "frames"),
    "truncated_frame_list": (GOOD[:-1], expectation(LAYOUT), "frames"),
    "header_only": (GOOD[:1], expectation(LAYOUT), "frames"),
    "extra_frame": ([*GOOD, b""], expectation(LAYOUT), "frames"),
    "short_chunk": (_chunk(GOOD, 2, bytes(GOOD[2])[:-1]), expectation(LAYOUT), "frames"),
    "long_chunk": (_chunk(GOOD, 3, bytes(GOOD[3]) + b"\0"), expectation(LAYOUT), "frames"),
    "frame_not_a_buffer": (_chunk(GOOD, 3, 12345), expectation(LAYOUT), "frames"),  # type: ignore[arg-type]
    "unknown_version": (repack(GOOD, version=PROTOCOL_VERSION + 1), expectation(LAYOUT), "version"),
    "wrong_run": (GOOD, expectation(LAYOUT, run="ff" * 32), "run"),
    "malformed_run": (repack(GOOD, run="XYZ"), expectation(LAYOUT), "run"),
    "sender_not_allowed": (repack(GOOD, sender=99), expectation(LAYOUT), "sender"),
    "unknown_kind": (repack(GOOD, kind="gossip"), expectation(LAYOUT), "kind"),
    "round_too_far_ahead": (repack(GOOD, round=12), expectation(LAYOUT, current_round=10, max_round_ahead=1), "round"),
    "negative_round": (repack(GOOD, round=-1), expectation(LAYOUT), "round"),
    "round_beyond_int64": (repack(GOOD, round=2**64 - 1), expectation(LAYOUT), "round"),
    "negative_degree": (repack(GOOD, degree=-2), expectation(LAYOUT), "header"),
    "wrong_dtype": (respec(GOOD, 1, dtype="float64", nbytes=96), expectation(LAYOUT), "dtype"),
    "unsupported_dtype": (respec(GOOD, 1, dtype="int8", nbytes=12), expectation(), "dtype"),
    "wrong_shape": (respec(GOOD, 1, shape=[3, 4]), expectation(LAYOUT), "shape"),
    "negative_dim": (respec(GOOD, 1, shape=[-4, -3]), expectation(), "shape"),
    "too_many_dims": (respec(GOOD, 1, shape=[1] * 9), expectation(), "shape"),
    "huge_shape_overflow": (respec(GOOD, 1, shape=[2**63, 2**63], nbytes=2**63), expectation(), "shape"),
    "nbytes_inconsistent": (respec(GOOD, 1, nbytes=47), expectation(), "size"),
    "layout_name_mismatch": (respec(GOOD, 1, name="e"), expectation(LAYOUT), "layout"),
    "duplicate_names": (respec(GOOD, 1, name="x"), expectation(), "layout"),
    "tensors_on_ping": (repack(GOOD, kind="ping"), expectation(), "layout"),
    "oversized": (GOOD, expectation(LAYOUT, max_bytes=CHUNK_BYTES), "size"),
    "header_too_large": ([b"\0" * (MAX_HEADER_BYTES + 1), *GOOD[1:]], expectation(LAYOUT), "size"),
    "header_not_msgpack": ([b"\xc1", *GOOD[1:]], expectation(LAYOUT), "header"),
    "header_trailing_bytes": ([bytes(GOOD[0]) + b"\0", *GOOD[1:]], expectation(LAYOUT), "header"),
    "header_not_a_map": ([msgpack.packb([1, 2, 3]), *GOOD[1:]], expectation(LAYOUT), "header"),
    "header_bad_utf8": ([msgpack.packb({"version": 1, "run": b"\xff"}, use_bin_type=False)], expectation(), "header"),
    "missing_field": (repack(GOOD, epoch=DELETE), expectation(LAYOUT), "header"),
    "missing_version": (repack(GOOD, version=DELETE), expectation(LAYOUT), "header"),
    "extra_field": (repack(GOOD, extra=1), expectation(LAYOUT), "header"),
    "round_as_str": (repack(GOOD, round="7"), expectation(LAYOUT), "header"),
    "round_as_float": (repack(GOOD, round=7.0), expectation(LAYOUT), "header"),
    "run_as_bytes": (repack(GOOD, run=RUN.encode()), expectation(LAYOUT), "header"),
    "tensors_as_map": (repack(GOOD, tensors={}), expectation(LAYOUT), "header"),
    "bool_as_int_sender": (repack(GOOD, sender=True), expectation(LAYOUT, senders=frozenset({1})), "header"),
    "bool_as_int_version": (repack(GOOD, version=True), expectation(LAYOUT), "header"),
    "bool_as_int_dim": (respec(GOOD, 1, shape=[True, 12]), expectation(), "header"),
    "meta_not_a_map": (repack(GOOD, meta=[1]), expectation(LAYOUT), "header"),
    "meta_nested_value": (repack(GOOD, meta={"a": {"b": 1}}), expectation(LAYOUT), "header"),
    "meta_too_many_keys": (repack(GOOD, meta={f"k{i}": i for i in range(33)}), expectation(LAYOUT), "header"),
    "meta_long_string": (repack(GOOD, meta={"a": "z" * 257}), expectation(LAYOUT), "header"),
    "meta_long_key": (repack(GOOD, meta={"k" * 65: 1}), expectation(LAYOUT), "header"),
    "spec_missing_field": (respec(GOOD, 0, nbytes=DELETE), expectation(LAYOUT), "header"),
}


@pytest.mark.parametrize("case", REJECTIONS)
def test_rejection_code_and_out_untouched(case: str) -> None:
    frames, expect, code = REJECTIONS[case]
    out = {name: torch.full_like(t, 42.0) for name, t in TENSORS.items()}
    before = {name: t.clone() for name, t in out.items()}
    error = rejected(frames, expect, out)
    assert error_code(error) == code, str(error)
    assert isinstance(error, WireError)
    assert all(torch.equal(out[n], before[n]) for n in out)


def test_reasons_name_the_field_and_decode_header_validates() -> None:
    assert str(rejected(repack(GOOD, round="7"), expectation())) == "header field 'round': expected int, got str"
    assert "'sender'" in str(rejected(repack(GOOD, sender=True), expectation()))
    assert "'epoch'" in str(rejected(repack(GOOD, epoch=DELETE), expectation()))
    assert "'extra'" in str(rejected(repack(GOOD, extra=1), expectation()))
    with pytest.raises(CodecError) as info:
        decode_header(repack(GOOD, sender=42)[0], expectation())
    assert error_code(info.value) == "sender"


def test_out_must_fit_the_message() -> None:
    wrong_shape = {"x": torch.zeros_like(TENSORS["x"]), "d": torch.zeros(3, 4)}
    assert error_code(rejected(GOOD, expectation(), wrong_shape)) == "shape"
    wrong_dtype = {"x": torch.zeros_like(TENSORS["x"]), "d": torch.zeros(4, 3, dtype=torch.float64)}
    assert error_code(rejected(GOOD, expectation(), wrong_dtype)) == "dtype"
    missing = {"x": torch.zeros_like(TENSORS["x"])}
    assert error_code(rejected(GOOD, expectation(), missing)) == "layout"
    assert torch.count_nonzero(missing["x"]) == 0 and torch.count_nonzero(wrong_shape["x"]) == 0
    with pytest.raises(ValueError, match="contiguous"):
        decode(GOOD, expectation(), {"x": torch.zeros_like(TENSORS["x"]), "d": torch.zeros(3, 4).t()})


# --- check_finite --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [0, 517, 1999])
def test_check_finite_catches_non_finite(dtype: torch.dtype, bad: float, where: int) -> None:
    x = torch.randn(2000, dtype=dtype)
    check_finite({"x": x, "d": torch.empty(0)})
    x[where] = bad
    with pytest.raises(CodecError, match="non-finite values in 'x'") as info:
        check_finite({"d": torch.zeros(3), "x": x})
    assert error_code(info.value) == "nonfinite"


def test_check_finite_max_abs() -> None:
    x = torch.tensor([0.5, -3.0, 2.0])
    check_finite({"x": x}, max_abs=3.0)
    for max_abs in (2.5, 1.0):
        with pytest.raises(CodecError, match="'x'") as info:
            check_finite({"x": x}, max_abs=max_abs)
        assert error_code(info.value) == "magnitude"
    with pytest.raises(CodecError) as info:
        check_finite({"x": torch.tensor([float("nan")])}, max_abs=1.0)
    assert error_code(info.value) == "nonfinite"
