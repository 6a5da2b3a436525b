"""Wire layer: message types and the validating multipart codec (see docs/wire-protocol.md)."""

from peernet.wire.codec import check_finite, decode, decode_header, encode, specs_of
from peernet.wire.messages import (
    CHUNK_BYTES,
    DROP_CODES,
    DTYPES,
    KINDS,
    PROTOCOL_VERSION,
    TENSOR_KINDS,
    Expectation,
    Header,
    Message,
    TensorSpec,
    chunk_count,
    chunk_lengths,
    error_code,
)

__all__ = [
    "CHUNK_BYTES",
    "DROP_CODES",
    "DTYPES",
    "KINDS",
    "PROTOCOL_VERSION",
    "TENSOR_KINDS",
    "Expectation",
    "Header",
    "Message",
    "TensorSpec",
    "check_finite",
    "chunk_count",
    "chunk_lengths",
    "decode",
    "decode_header",
    "encode",
    "error_code",
    "specs_of",
]
