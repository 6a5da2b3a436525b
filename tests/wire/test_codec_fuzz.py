"""Property tests: whatever frames arrive, decode returns a valid Message or raises CodecError, nothing else."""

from __future__ import annotations

from typing import Any

import msgpack
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from peernet.errors import CodecError
from peernet.wire import (
    DROP_CODES,
    DTYPES,
    KINDS,
    PROTOCOL_VERSION,
    Expectation,
    Header,
    Message,
    TensorSpec,
    decode,
    encode,
    error_code,
    specs_of,
)
from peernet.wire.messages import FIELDS, SPEC_FIELDS

# 2 tests x 5,000 examples = 10,000 generated frame sets per run (tiny tensors keep each well under a millisecond).
EXAMPLES = 5000
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RUN = "c0ffee" * 10
TENSORS = {"x": torch.arange(5.0), "d": torch.arange(6, dtype=torch.float64).reshape(2, 3), "e": torch.empty(0)}
LAYOUT = {s.name: s for s in specs_of(TENSORS)}
HEADER = Header(PROTOCOL_VERSION, RUN, 4, 9, "round", 2, 0, specs_of(TENSORS), {"loss": 0.5, "tag": "a"})
VALID = [bytes(f) for f in encode(HEADER, TENSORS)]
EXPECTS = [
    Expectation(RUN, frozenset({4}), LAYOUT, 4096),
    Expectation(RUN, frozenset(range(64)), None, 1 << 20, max_round_ahead=2, current_round=8),
]

# Values of every msgpack type, biased towards the edges of what the validators accept; flat containers only,
# since deep nesting costs generation time and the decoder rejects any container where it wants a scalar anyway.
texts = st.text(alphabet="abxdeé🙂\x00-", max_size=8) | st.sampled_from([*KINDS, *DTYPES, RUN, "x", "d", "e", ""])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    texts,
    st.binary(max_size=8),
)
values = scalars | st.lists(scalars, max_size=3) | st.dictionaries(texts, scalars, max_size=3)
shapes = st.lists(st.integers(-2, 2**64 - 1) | st.integers(0, 6), max_size=10)
header_keys = st.sampled_from([*FIELDS, "extra"])
spec_keys = st.sampled_from([*SPEC_FIELDS, "extra"])

mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("cut_header"), st.integers(0, 200)),
    st.tuples(st.just("drop"), st.integers(0, 10)),
    st.tuples(st.just("duplicate"), st.integers(0, 10)),
    st.tuples(st.just("resize"), st.integers(0, 10), st.integers(-9, 9)),
    st.tuples(st.just("swap"), st.integers(0, 10), st.integers(0, 10)),
    st.tuples(st.just("field"), header_keys, values),
    st.tuples(st.just("delete"), header_keys),
    st.tuples(st.just("spec"), st.integers(0, 3), spec_keys, values | shapes),
    st.tuples(st.just("meta"), texts | st.just("k" * 65), values),
)


def _mutate_header(frames: list[bytes], change: Any) -> None:
    try:
        obj = msgpack.unpackb(frames[0], strict_map_key=False)
    except Exception:
        return  # an earlier byte-level mutation already broke frame 0; nothing to re-pack
    if not isinstance(obj, dict):
        return
    change(obj)
    frames[0] = msgpack.packb(obj, use_bin_type=True)


def _apply(frames: list[bytes], op: tuple[Any, ...]) -> None:
    kind, *args = op
    if not frames:
        return
    i = args[0] % len(frames) if isinstance(args[0], int) else 0
    if kind == "flip":
        head = bytearray(frames[0])
        if head:
            head[args[0] % len(head)] ^= args[1]
        frames[0] = bytes(head)
    elif kind == "cut_header":
        frames[0] = frames[0][: args[0]]
    elif kind == "drop":
        del frames[i]
    elif kind == "duplicate":
        frames.insert(i, frames[i])
    elif kind == "resize":
        frames[i] = frames[i][: args[1]] if args[1] < 0 else frames[i] + b"\x7f" * args[1]
    elif kind == "swap":
        j = args[1] % len(frames)
        frames[i], frames[j] = frames[j], frames[i]
    elif kind == "field":
        _mutate_header(frames, lambda obj: obj.__setitem__(args[0], args[1]))
    elif kind == "delete":
        _mutate_header(frames, lambda obj: obj.pop(args[0], None))
    elif kind == "spec":
        _mutate_header(frames, lambda obj: _set_spec(obj, *args))
    elif kind == "meta":
        _mutate_header(frames, lambda obj: isinstance(obj.get("meta"), dict) and obj["meta"].__setitem__(*args))


def _set_spec(obj: dict[Any, Any], index: int, key: str, value: Any) -> None:
    specs = obj.get("tensors")
    if isinstance(specs, list) and specs and isinstance(specs[index % len(specs)], dict):
        specs[index % len(specs)][key] = value


def _check_outcome(frames: list[Any], expect: Expectation, out: dict[str, torch.Tensor] | None) -> None:
    before = {name: t.clone() for name, t in (out or {}).items()}
    try:
        message = decode(frames, expect, out)
    except CodecError as exc:
        event(f"rejected: {error_code(exc)}")
        assert error_code(exc) in DROP_CODES
        assert all(torch.equal(out[n], before[n]) for n in before)  # type: ignore[index]
        return
    event("accepted")
    _assert_valid(message, expect, out)


def _assert_valid(message: Message, expect: Expectation, out: dict[str, torch.Tensor] | None) -> None:
    header = message.header
    assert header.version == PROTOCOL_VERSION and header.run == expect.run and header.sender in expect.senders
    assert header.kind in KINDS and all(type(v) is int and v >= 0 for v in (header.round, header.degree, header.epoch))
    assert all(isinstance(s, TensorSpec) for s in header.tensors)
    assert list(message.tensors) == [s.name for s in header.tensors]
    for spec in header.tensors:
        tensor = message.tensors[spec.name]
        assert tensor.dtype == DTYPES[spec.dtype] and tuple(tensor.shape) == spec.shape
        if out is not None:
            assert tensor is out[spec.name]
    if expect.layout is not None and header.kind in ("round", "state"):
        assert {s.name: s for s in header.tensors} == expect.layout


@FUZZ
@given(
    frames=st.lists(st.binary(max_size=64), max_size=6),
    packed_head=st.none() | st.dictionaries(header_keys, values, max_size=10) | values,
    which=st.integers(0, 1),
    use_out=st.booleans(),
)
def test_random_frames_never_escape(frames: list[bytes], packed_head: Any, which: int, use_out: bool) -> None:
    if packed_head is not None:
        frames = [msgpack.packb(packed_head, use_bin_type=True), *frames]
    out = {name: torch.full_like(t, 7.0) for name, t in TENSORS.items()} if use_out else None
    _check_outcome(frames, EXPECTS[which], out)


@FUZZ
@given(ops=st.lists(mutations, min_size=1, max_size=3), which=st.integers(0, 1), use_out=st.booleans())
def test_mutated_messages_never_escape(ops: list[tuple[Any, ...]], which: int, use_out: bool) -> None:
    frames = list(VALID)
    for op in ops:
        _apply(frames, op)
    out = {name: torch.full_like(t, 7.0) for name, t in TENSORS.items()} if use_out else None
    _check_outcome(frames, EXPECTS[which], out)


def test_unmutated_message_decodes() -> None:
    for expect in EXPECTS:
        message = decode(VALID, expect)
        assert message.header == HEADER
        assert all(torch.equal(message.tensors[n], TENSORS[n]) for n in TENSORS)
