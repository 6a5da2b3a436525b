"""Message types, protocol constants and hard limits of peernet's wire format (docs/wire-protocol.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

PROTOCOL_VERSION = 1

# ~1 MiB frames let the receiver reuse pages instead of faulting in fresh ones per message
# (measured ≈ 6 GB/s against ≈ 1.75 GB/s for one 44 MB frame).
CHUNK_BYTES = 1 << 20

KINDS = ("round", "hello", "ping", "pong", "state_request", "state", "bye")
# Only these kinds carry tensors; every other kind must declare none.
TENSOR_KINDS = frozenset({"round", "state"})

# Names on the wire -> torch dtypes. Payload bytes are little-endian.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
ITEMSIZE: dict[str, int] = {"float32": 4, "float64": 8}
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


@dataclass
class Message:
    """A decoded message: its header and the tensors that were filled."""

    header: Header
    tensors: dict[str, torch.Tensor]
