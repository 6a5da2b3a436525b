"""Encode and validate-then-decode peernet messages: a msgpack header frame plus raw tensor chunks."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack
import numpy as np
import torch

from peernet.errors import CodecError
from peernet.wire.messages import (
    DTYPE_NAMES,
    DTYPES,
    FIELDS,
    MAX_DIMS,
    MAX_HEADER_BYTES,
    MAX_META_KEYS,
    MAX_META_STR_CHARS,
    MAX_TENSORS,
    TENSOR_KINDS,
    Expectation,
    Header,
    Message,
    TensorSpec,
    chunk_count,
    chunk_lengths,
    header_to_wire,
    parse_header,
    reject,
)

# A frame is bytes, a memoryview, a zmq.Frame or anything else exposing the buffer protocol.
FrameLike = Any

# Payload bytes are little-endian; a big-endian host swaps on both ends.
_LITTLE = sys.byteorder == "little"
_UNPACK_LIMITS = {
    "max_str_len": 4 * MAX_META_STR_CHARS,  # bytes: a UTF-8 char takes up to 4
    "max_bin_len": 0,
    "max_ext_len": 0,
    "max_array_len": max(MAX_TENSORS, MAX_DIMS),
    "max_map_len": max(MAX_META_KEYS, len(FIELDS)),
}


def _check_layout(specs: tuple[TensorSpec, ...], layout: Mapping[str, TensorSpec],
                  alternatives: Sequence[Mapping[str, TensorSpec]] = ()) -> None:
    names = {s.name for s in specs}
    layout = next((alt for alt in alternatives if set(alt) == names), layout)  # the names pick the layout
    if names != set(layout):
        missing, extra = sorted(set(layout) - names), sorted(names - set(layout))
        reject("layout", f"header field 'tensors': missing {missing}, unexpected {extra}")
    for spec in specs:
        want = layout[spec.name]
        if spec.dtype != want.dtype:
            reject("dtype", f"tensor {spec.name!r}: dtype {spec.dtype}, expected {want.dtype}")
        if spec.shape != tuple(want.shape):
            reject("shape", f"tensor {spec.name!r}: shape {list(spec.shape)}, expected {list(want.shape)}")


def _check_expected(header: Header, expect: Expectation, header_bytes: int) -> None:
    if header.run != expect.run:
        reject("run", "header field 'run': not this run's fingerprint")
    if header.sender not in expect.senders:
        reject("sender", f"header field 'sender': {header.sender} is not an allowed sender")
    if expect.max_round_ahead is not None and header.round > expect.current_round + expect.max_round_ahead:
        reject("round", f"header field 'round': {header.round} is too far ahead of {expect.current_round}")
    if expect.layout is not None and header.kind in TENSOR_KINDS:
        _check_layout(header.tensors, expect.layout, expect.alternatives)
    total = header_bytes + sum(s.nbytes for s in header.tensors)
    if total > expect.max_bytes:
        reject("size", f"message of {total} bytes exceeds max_bytes {expect.max_bytes}")


def _as_bytes(frame: FrameLike, index: int) -> memoryview:
    """A flat, contiguous byte view of one frame (no copy)."""
    try:
        view = memoryview(frame.buffer if hasattr(frame, "buffer") else frame)
        if not view.c_contiguous:
            raise ValueError("not contiguous")
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    except Exception:  # whatever an arbitrary object raises, it is a bad frame
        reject("frames", f"frame {index}: not a contiguous byte buffer")


def _header_from_view(view: memoryview, expect: Expectation) -> Header:
    if view.nbytes > min(MAX_HEADER_BYTES, expect.max_bytes):
        reject("size", f"header frame of {view.nbytes} bytes is too large")
    try:
        obj = msgpack.unpackb(view, raw=False, use_list=False, strict_map_key=True, **_UNPACK_LIMITS)
    except Exception as exc:  # msgpack raises many types (FormatError, StackError, ValueError, UnicodeError, ...)
        reject("header", f"header: not valid msgpack ({type(exc).__name__})")
    header = parse_header(obj)
    _check_expected(header, expect, view.nbytes)
    return header


def decode_header(frame: FrameLike, expect: Expectation) -> Header:
    """Decode and validate frame 0 against ``expect``; raises CodecError (with ``code``) on any problem."""
    return _header_from_view(_as_bytes(frame, 0), expect)


_SAME_SIZE_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _swapped(tensor: torch.Tensor) -> np.ndarray:
    """A flat numpy view of ``tensor`` as integers of its element size, whose bytes can be swapped (numpy has
    no bfloat16, and the swap is the same for any type of that size)."""
    return tensor.detach().reshape(-1).view(_SAME_SIZE_INT[tensor.element_size()]).numpy()


def _byte_view(tensor: torch.Tensor) -> np.ndarray:
    """The bytes of a contiguous CPU tensor as a flat uint8 numpy array sharing its memory."""
    return tensor.detach().reshape(-1).view(torch.uint8).numpy()


def _destinations(specs: tuple[TensorSpec, ...], out: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    dest: dict[str, torch.Tensor] = {}
    for spec in specs:
        if out is None:
            dest[spec.name] = torch.empty(spec.shape, dtype=DTYPES[spec.dtype])
            continue
        target = out.get(spec.name)
        if target is None:
            reject("layout", f"tensor {spec.name!r}: no destination buffer in out")
        if target.dtype != DTYPES[spec.dtype]:
            reject("dtype", f"tensor {spec.name!r}: dtype {spec.dtype}, destination is {target.dtype}")
        if tuple(target.shape) != spec.shape:
            reject("shape", f"tensor {spec.name!r}: shape {list(spec.shape)}, destination is {list(target.shape)}")
        if target.device.type != "cpu" or not target.is_contiguous():
            raise ValueError(f"out[{spec.name!r}] must be a contiguous CPU tensor")
        dest[spec.name] = target
    return dest


def decode(frames: Sequence[FrameLike], expect: Expectation, out: Mapping[str, torch.Tensor] | None = None) -> Message:
    """Validate a whole message, then copy its chunks into ``out`` (or fresh tensors when ``out`` is None).

    Every check (header, frame count, each chunk's length, destination dtype/shape) runs before the first byte
    is written, so a rejected message leaves ``out`` untouched. Tensors of ``out`` that the message does not
    carry are left as they are and are not returned. A frame that already is its chunk of ``out`` (the
    transport received it in place, into :func:`payload_views`) is not copied. Raises CodecError with a
    ``code`` from DROP_CODES.
    """
    try:
        count = len(frames)
    except Exception:
        reject("frames", f"frames: expected a sequence, got {type(frames).__name__}")
    if count == 0:
        reject("frames", "message has no frames")
    header = _header_from_view(_as_bytes(frames[0], 0), expect)
    expected = 1 + sum(chunk_count(s.nbytes) for s in header.tensors)
    if count != expected:
        reject("frames", f"message has {count} frames, header declares {expected}")
    views: list[memoryview] = []
    for spec in header.tensors:
        for length in chunk_lengths(spec.nbytes):
            index = len(views) + 1
            view = _as_bytes(frames[index], index)
            if view.nbytes != length:
                reject("frames", f"frame {index} of tensor {spec.name!r}: {view.nbytes} bytes, expected {length}")
            views.append(view)
    dest = _destinations(header.tensors, out)
    chunks = iter(views)
    for spec in header.tensors:
        flat = _byte_view(dest[spec.name])
        offset = 0
        for length in chunk_lengths(spec.nbytes):
            src = np.frombuffer(next(chunks), dtype=np.uint8)
            target = flat[offset : offset + length]
            if length and src.ctypes.data != target.ctypes.data:  # else received in place (payload_views)
                target[:] = src
            offset += length
        if not _LITTLE:
            _swapped(dest[spec.name]).byteswap(inplace=True)
    return Message(header, dest)


def payload_views(specs: tuple[TensorSpec, ...], out: Mapping[str, torch.Tensor]) -> list[memoryview]:
    """Writable byte views of ``out``'s tensors, one per payload frame of a message carrying ``specs``: where a
    transport can receive that message's chunks in place, so that :func:`decode` into ``out`` copies nothing.

    Raises CodecError for destinations that do not match ``specs`` (as :func:`decode` would)."""
    dest = _destinations(specs, out)
    return [chunk for spec in specs for chunk in _chunks(_byte_view(dest[spec.name]).data, spec.nbytes)]


def _chunks(data: memoryview, nbytes: int) -> list[memoryview]:
    """``data`` (a tensor's ``nbytes`` bytes) cut into its payload frames, as views: the one chunking rule that
    sending (tensor_frames) and receiving in place (payload_views) share."""
    views: list[memoryview] = []
    offset = 0
    for length in chunk_lengths(nbytes):
        views.append(data[offset : offset + length])
        offset += length
    return views


def specs_of(tensors: Mapping[str, torch.Tensor]) -> tuple[TensorSpec, ...]:
    """The TensorSpecs describing ``tensors``, in iteration order; raises ValueError for unsupported dtypes."""
    specs = []
    for name, tensor in tensors.items():
        if tensor.dtype not in DTYPE_NAMES:
            raise ValueError(f"tensor {name!r}: dtype {tensor.dtype} cannot be sent (supported: {list(DTYPES)})")
        specs.append(TensorSpec(name, DTYPE_NAMES[tensor.dtype], tuple(tensor.shape)))
    return tuple(specs)


def _send_view(tensor: torch.Tensor) -> memoryview:
    src = tensor.detach()
    if src.device.type != "cpu" or not src.is_contiguous():
        src = src.contiguous().cpu()  # the one copy encode makes: GPU or strided tensors cannot be sent in place
    if not _LITTLE:
        return _swapped(src).byteswap().view(np.uint8).data
    return _byte_view(src).data  # ndarray.data: a memoryview of the tensor's own bytes


def encode_header(header: Header) -> bytes:
    """The packed frame 0 of ``header``; raises ValueError for a header receivers would reject as malformed."""
    wire = header_to_wire(header)
    try:
        parse_header(wire)
    except CodecError as exc:
        raise ValueError(f"cannot encode: {exc}") from exc
    try:
        packed: bytes = msgpack.packb(wire, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. a lone surrogate in a meta string
        raise ValueError(f"cannot encode: header does not pack: {exc}") from exc
    if len(packed) > MAX_HEADER_BYTES:
        raise ValueError(f"cannot encode: header of {len(packed)} bytes exceeds {MAX_HEADER_BYTES}")
    return packed


def encode(header: Header, tensors: Mapping[str, torch.Tensor]) -> list[bytes | memoryview]:
    """Frames of one message: the packed header, then each tensor's bytes in chunks of at most CHUNK_BYTES.

    ``header.tensors`` must equal ``specs_of(tensors)``. For contiguous CPU tensors the chunks are views of the
    tensors' memory (send them with ``copy=False``): do not modify the tensors until the send has completed.
    Other tensors are copied once. Raises ValueError for a header that receivers would reject as malformed.
    Frame 0 may be swapped for another ``encode_header`` of the same tensors (one header per recipient).
    """
    if header.tensors != specs_of(tensors):
        raise ValueError("header.tensors does not describe the tensors; build it with specs_of(tensors)")
    return [encode_header(header), *tensor_frames(tensors)]


def tensor_frames(tensors: Mapping[str, torch.Tensor]) -> list[memoryview]:
    """The frames after the header (what ``encode`` puts after frame 0): each tensor's bytes in iteration order,
    in chunks of at most CHUNK_BYTES; views of the tensors' memory when they are contiguous CPU tensors."""
    return [chunk for spec in specs_of(tensors) for chunk in _chunks(_send_view(tensors[spec.name]), spec.nbytes)]


def check_finite(tensors: Mapping[str, torch.Tensor], max_abs: float | None = None) -> dict[str, float]:
    """Raise CodecError ("nonfinite") on NaN/±Inf, or ("magnitude") on any |value| > ``max_abs``; else return
    each tensor's largest magnitude (0 for an empty one), which the exchange uses to tell who pushed whom."""
    peaks: dict[str, float] = {}
    for name, tensor in tensors.items():
        if tensor.numel() == 0:
            peaks[name] = 0.0
            continue
        # One reduction pass with no temporary the size of the tensor; aminmax propagates NaN.
        low, high = (float(v) for v in torch.aminmax(tensor.detach()))
        if not (math.isfinite(low) and math.isfinite(high)):
            reject("nonfinite", f"non-finite values in {name!r}")
        peaks[name] = max(-low, high)
        if max_abs is not None and peaks[name] > max_abs:
            reject("magnitude", f"values in {name!r} exceed max_abs {max_abs:g} (|v| up to {peaks[name]:g})")
    return peaks
