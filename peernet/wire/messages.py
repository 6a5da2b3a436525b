"""Message types, protocol constants, limits and header schema of peernet's wire format (docs/wire-protocol.md)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch

from peernet.errors import CodecError

PROTOCOL_VERSION = 2  # 2: compressed round messages (16-bit floats, int positions; docs/wire-protocol.md)

# ~1 MiB frames let the receiver reuse pages instead of faulting in fresh ones per message
# (measured ≈ 6 GB/s against ≈ 1.75 GB/s for one 44 MB frame).
CHUNK_BYTES = 1 << 20

KINDS = ("round", "hello", "ping", "pong", "state_request", "state", "bye")
# Only these kinds carry tensors; every other kind must declare none.
TENSOR_KINDS = frozenset({"round", "state"})

# Names on the wire -> torch dtypes. Payload bytes are little-endian. The 16-bit floats and the integers carry
# compressed messages (cast values, kept positions); which tensor may have which dtype is the receiver's layout.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
                                  "bfloat16": torch.bfloat16, "int32": torch.int32, "int64": torch.int64}
ITEMSIZE: dict[str, int] = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int32": 4, "int64": 8}
DTYPE_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}

# Limits a header must respect; they bound what a hostile peer can make the decoder allocate.
MAX_HEADER_BYTES = 1 << 16
MAX_TENSORS = 32
MAX_DIMS = 8
MAX_NAME_CHARS = 16
MAX_RUN_CHARS = 64
MAX_META_KEYS = 32
MAX_META_KEY_CHARS = 64
MAX_META_STR_CHARS = 256
MAX_INT = (1 << 63) - 1  # integer header fields must fit an int64
_MIN_INT = -(1 << 63)

FIELDS = ("version", "run", "sender", "round", "kind", "degree", "epoch", "tensors", "meta")
SPEC_FIELDS = ("name", "dtype", "shape", "nbytes")
_RUN_RE = re.compile(r"[0-9a-f]{1,64}")

# Every CodecError carries one of these as ``code`` so the node can count drops per reason.
DROP_CODES = (
    "header",  # not msgpack, not a map, missing/unknown field, wrong type, degree/epoch/meta out of bounds
    "version",  # protocol version differs
    "run",  # run fingerprint differs from ours
    "sender",  # sender is not one of our neighbours
    "kind",  # unknown message kind
    "round",  # negative round or too far ahead
    "layout",  # tensor names differ from the expected layout, duplicates, or tensors on a tensor-less kind
    "dtype",  # unknown dtype or not the expected one
    "shape",  # malformed shape or not the expected one
    "size",  # header too large, declared nbytes inconsistent, or message larger than max_bytes
    "frames",  # wrong frame count, wrong chunk length, or a frame that is not a byte buffer
    "nonfinite",  # NaN or ±Inf in a received tensor (check_finite)
    "magnitude",  # |value| above the configured max_abs (check_finite)
    "value",  # well-formed, but a field's value makes no sense for this run (node-side protocol check)
    "handling",  # acting on the message failed (node side): dropped, counted and blamed on its sender
    "compressed",  # a compressed message breaking its compressor's rules: positions unsorted, repeated, out of range
)

MetaValue = int | float | str | bool | None


@dataclass(frozen=True)
class TensorSpec:
    """Name, wire dtype name and shape of one tensor in a message."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * ITEMSIZE[self.dtype]


def chunk_count(nbytes: int) -> int:
    """Number of payload frames for a tensor of ``nbytes`` bytes; an empty tensor still takes one (empty) frame."""
    return max(1, -(-nbytes // CHUNK_BYTES))


def chunk_lengths(nbytes: int) -> list[int]:
    """Exact length of each payload frame of a tensor of ``nbytes`` bytes, in order."""
    if nbytes == 0:
        return [0]
    full, rest = divmod(nbytes, CHUNK_BYTES)
    return [CHUNK_BYTES] * full + ([rest] if rest else [])


@dataclass(frozen=True)
class Header:
    """Frame 0 of every message, after validation."""

    version: int
    run: str  # run fingerprint, lower-case hex, 1-64 chars
    sender: int  # node id
    round: int  # >= 0
    kind: str  # one of KINDS
    degree: int  # sender's declared live degree this round (>= 0)
    epoch: int  # edge epoch (>= 0)
    tensors: tuple[TensorSpec, ...] = ()
    # Small extra scalars (loss, endpoint for hello, ...); bounded by the MAX_META_* limits.
    meta: dict[str, MetaValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Expectation:
    """What the receiver will accept."""

    run: str
    senders: frozenset[int]  # allowed sender ids (the node's neighbours)
    # For kinds "round"/"state": the exact tensor specs expected (names, dtype, shape), in any order.
    layout: dict[str, TensorSpec] | None
    max_bytes: int  # bound on header + payload bytes
    max_round_ahead: int | None = None  # with current_round: reject round > current_round + max_round_ahead
    current_round: int = 0
    # Other layouts a round or state message may have instead (a compressed run: the compressed message, or the
    # full public copies); the tensor names select one, which is then checked as ``layout`` is.
    alternatives: tuple[dict[str, TensorSpec], ...] = ()


@dataclass
class Message:
    """A decoded message: its header and the tensors that were filled."""

    header: Header
    tensors: dict[str, torch.Tensor]


def reject(code: str, msg: str) -> NoReturn:
    """Raise a CodecError whose ``code`` attribute (one of DROP_CODES) says why the message is dropped."""
    err = CodecError(msg)
    # errors.py defines no `code` field; set it without assuming one so this keeps working if it gains one.
    object.__setattr__(err, "code", code)
    raise err


def error_code(err: BaseException) -> str:
    """The drop code (one of DROP_CODES) of a CodecError raised by the wire codec; "other" for anything else."""
    code = getattr(err, "code", None)
    return code if isinstance(code, str) else "other"


def _tname(value: object) -> str:
    return type(value).__name__


def _int_field(obj: dict[Any, Any], key: str, code: str) -> int:
    value = obj[key]
    if type(value) is not int:  # `type is` so that bool (an int subclass) is rejected
        reject("header", f"header field {key!r}: expected int, got {_tname(value)}")
    if not 0 <= value <= MAX_INT:
        reject(code, f"header field {key!r}: {value} is out of range [0, 2**63)")
    return value


def _str_field(obj: dict[Any, Any], key: str) -> str:
    value = obj[key]
    if type(value) is not str:
        reject("header", f"header field {key!r}: expected str, got {_tname(value)}")
    return value


def _check_keys(obj: dict[Any, Any], fields: tuple[str, ...], where: str) -> None:
    for key in fields:
        if key not in obj:
            reject("header", f"{where}: missing field {key!r}")
    for key in obj:
        if key not in fields:
            reject("header", f"{where}: unknown field {key!r}")


def _parse_spec(raw: Any, index: int) -> TensorSpec:
    where = f"header tensor {index}"
    if type(raw) is not dict:
        reject("header", f"{where}: expected map, got {_tname(raw)}")
    _check_keys(raw, SPEC_FIELDS, where)
    name, dtype, shape, declared = raw["name"], raw["dtype"], raw["shape"], raw["nbytes"]
    if type(name) is not str or not 1 <= len(name) <= MAX_NAME_CHARS:
        reject("header", f"{where} field 'name': expected str of 1-{MAX_NAME_CHARS} chars")
    where = f"header tensor {name!r}"
    if type(dtype) is not str:
        reject("header", f"{where} field 'dtype': expected str, got {_tname(dtype)}")
    if dtype not in DTYPES:
        reject("dtype", f"{where} field 'dtype': unsupported {dtype!r}")
    if type(shape) is not tuple:
        reject("header", f"{where} field 'shape': expected array, got {_tname(shape)}")
    if len(shape) > MAX_DIMS:
        reject("shape", f"{where} field 'shape': {len(shape)} dims, at most {MAX_DIMS}")
    for dim in shape:
        if type(dim) is not int:
            reject("header", f"{where} field 'shape': expected int dims, got {_tname(dim)}")
        if dim < 0:
            reject("shape", f"{where} field 'shape': negative dim {dim}")
    nbytes = math.prod(shape) * ITEMSIZE[dtype]  # Python ints: a huge product cannot wrap around
    if nbytes > MAX_INT:
        reject("shape", f"{where} field 'shape': {nbytes} bytes does not fit an int64")
    if type(declared) is not int:
        reject("header", f"{where} field 'nbytes': expected int, got {_tname(declared)}")
    if declared != nbytes:
        reject("size", f"{where} field 'nbytes': declares {declared}, shape and dtype give {nbytes}")
    return TensorSpec(name, dtype, shape)


def _parse_meta(raw: Any) -> dict[str, MetaValue]:
    if type(raw) is not dict:
        reject("header", f"header field 'meta': expected map, got {_tname(raw)}")
    if len(raw) > MAX_META_KEYS:
        reject("header", f"header field 'meta': {len(raw)} keys, at most {MAX_META_KEYS}")
    for key, value in raw.items():
        if type(key) is not str or not 1 <= len(key) <= MAX_META_KEY_CHARS:
            reject("header", f"header field 'meta': keys must be str of 1-{MAX_META_KEY_CHARS} chars")
        if value is not None and type(value) not in (int, float, str, bool):
            reject("header", f"header field 'meta' key {key!r}: unsupported type {_tname(value)}")
        if type(value) is str and len(value) > MAX_META_STR_CHARS:
            reject("header", f"header field 'meta' key {key!r}: str longer than {MAX_META_STR_CHARS} chars")
        if type(value) is int and not _MIN_INT <= value <= MAX_INT:
            reject("header", f"header field 'meta' key {key!r}: int does not fit an int64")
    return dict(raw)


def parse_header(obj: Any) -> Header:
    """Check the structure of an unpacked header (everything that does not depend on the receiver)."""
    if type(obj) is not dict:
        reject("header", f"header: expected a map, got {_tname(obj)}")
    # Version first, so a peer on another protocol version is counted as such rather than as malformed.
    if "version" not in obj:
        reject("header", "header: missing field 'version'")
    version = obj["version"]
    if type(version) is not int:
        reject("header", f"header field 'version': expected int, got {_tname(version)}")
    if version != PROTOCOL_VERSION:
        reject("version", f"header field 'version': {version} is not supported (this is {PROTOCOL_VERSION})")
    _check_keys(obj, FIELDS, "header")
    run = _str_field(obj, "run")
    if not _RUN_RE.fullmatch(run):
        reject("run", "header field 'run': expected 1-64 lower-case hex chars")
    sender = _int_field(obj, "sender", "sender")
    round_ = _int_field(obj, "round", "round")
    kind = _str_field(obj, "kind")
    if kind not in KINDS:
        reject("kind", f"header field 'kind': unknown kind {kind!r}")
    degree = _int_field(obj, "degree", "header")
    epoch = _int_field(obj, "epoch", "header")
    raw_tensors = obj["tensors"]
    if type(raw_tensors) is not tuple:
        reject("header", f"header field 'tensors': expected array, got {_tname(raw_tensors)}")
    if len(raw_tensors) > MAX_TENSORS:
        reject("layout", f"header field 'tensors': {len(raw_tensors)} tensors, at most {MAX_TENSORS}")
    specs = tuple(_parse_spec(raw, i) for i, raw in enumerate(raw_tensors))
    if len({s.name for s in specs}) != len(specs):
        reject("layout", "header field 'tensors': duplicate tensor names")
    if specs and kind not in TENSOR_KINDS:
        reject("layout", f"header field 'tensors': kind {kind!r} carries no tensors")
    meta = _parse_meta(obj["meta"])
    return Header(PROTOCOL_VERSION, run, sender, round_, kind, degree, epoch, specs, meta)


def header_to_wire(header: Header) -> dict[str, Any]:
    """The header as the plain map that is msgpack-packed into frame 0."""
    specs = tuple({"name": s.name, "dtype": s.dtype, "shape": s.shape, "nbytes": s.nbytes} for s in header.tensors)
    return {
        "version": header.version,
        "run": header.run,
        "sender": header.sender,
        "round": header.round,
        "kind": header.kind,
        "degree": header.degree,
        "epoch": header.epoch,
        "tensors": specs,
        "meta": header.meta,
    }
