"""How compressed round messages travel: tensor names, the expected layout, factors flattened, checks on receipt."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from peernet.core.compressors import Compressed, Compressor
from peernet.errors import CompressionError
from peernet.wire.messages import DTYPE_NAMES, DTYPES, TensorSpec, reject

Tensor = torch.Tensor
#: Wire name suffixes of one gossiped tensor's message: the values, the kept positions, the low-rank factors.
VALUES, INDICES, FACTORS = ".v", ".i", ".f"


def compressed_layout(compressor: Compressor, dense: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
    """The specs of a compressed round message, for the gossiped tensors of ``dense`` (name -> ``(P,)`` spec).

    A pure function of the run's settings (compressor, ratio or rank, model shapes, dtype), so every node derives
    the same layout and checks a header against it before allocating anything. Per gossiped tensor ``x``: ``x.v``
    (values), ``x.i`` (positions, top-k and random-k) and ``x.f`` (low rank: every factor ``P_0, Q_0, P_1, …`` in
    C order, one flat tensor, so that a deep model's many factors stay within the wire's 32 tensors).
    """
    layout: dict[str, TensorSpec] = {}
    for name, spec in dense.items():
        size = spec.shape[0]
        shapes = compressor.message_shapes(size)
        dtypes = [DTYPE_NAMES[d] for d in compressor.message_dtypes(size, DTYPES[spec.dtype])]
        layout[name + VALUES] = TensorSpec(name + VALUES, dtypes[0], shapes[0])
        rest = 1
        if _has_indices(dtypes):
            layout[name + INDICES] = TensorSpec(name + INDICES, dtypes[1], shapes[1])
            rest = 2
        if len(shapes) > rest:
            layout[name + FACTORS] = TensorSpec(name + FACTORS, dtypes[rest],
                                                (sum(math.prod(s) for s in shapes[rest:]),))
    return layout


def _has_indices(dtypes: list[str]) -> bool:
    return len(dtypes) > 1 and dtypes[1].startswith("int")


def to_wire(messages: Mapping[str, Compressed]) -> dict[str, Tensor]:
    """The tensors of a compressed round message, by wire name, in :func:`compressed_layout`'s order."""
    out: dict[str, Tensor] = {}
    for name, msg in messages.items():
        out[name + VALUES] = msg.values
        if msg.indices is not None:
            out[name + INDICES] = msg.indices
        if msg.factors:
            out[name + FACTORS] = torch.cat([f.reshape(-1) for f in msg.factors])
    return out


def from_wire(compressor: Compressor, tensors: Mapping[str, Tensor], sizes: Mapping[str, int]
              ) -> dict[str, Compressed]:
    """The messages a validated compressed round message carries, by gossiped tensor name (``sizes``: its entries).

    Each factor is copied out of the flat tensor: decoded from its own, freshly allocated memory as the sender
    decoded its own factors, the product ``P Qᵀ`` gives the sender's bits (the copies stay identical). Raises
    CodecError ``compressed`` when a message breaks its compressor's rules (:func:`check_wire`).
    """
    check_wire(compressor, tensors, sizes)
    return unpack(compressor, tensors, sizes)


def check_wire(compressor: Compressor, tensors: Mapping[str, Tensor], sizes: Mapping[str, int]) -> None:
    """CodecError ``compressed`` unless every message follows its compressor's rules (``Compressor.check``:
    positions ascending, distinct and inside the tensor): such a message is dropped, never used."""
    for name, msg in unpack(compressor, tensors, sizes, copy=False).items():
        try:
            compressor.check(msg, sizes[name])
        except CompressionError as exc:
            reject("compressed", f"tensor {name!r}: {exc}")


def unpack(compressor: Compressor, tensors: Mapping[str, Tensor], sizes: Mapping[str, int], *, copy: bool = True
           ) -> dict[str, Compressed]:
    """The messages of a compressed round message as they are, unchecked (a message filed after
    :func:`check_wire`); ``copy``: each low-rank factor in memory of its own (see :func:`from_wire`)."""
    out: dict[str, Compressed] = {}
    for name, size in sizes.items():
        shapes = compressor.message_shapes(size)
        indices = tensors.get(name + INDICES)
        flat = tensors.get(name + FACTORS)
        factors: list[Tensor] = []
        offset = 0
        for shape in shapes[1 + (indices is not None):]:
            assert flat is not None  # the layout has factors exactly when the compressor sends some
            count = math.prod(shape)
            factor = flat[offset:offset + count].reshape(shape)
            factors.append(factor.clone() if copy else factor)
            offset += count
        out[name] = Compressed(compressor.name, size, tensors[name + VALUES], indices, tuple(factors))
    return out


def is_compressed(tensors: Mapping[str, Tensor] | Mapping[str, TensorSpec]) -> bool:
    """Whether a round message carries compressed tensors (else the full public copies, by their own names)."""
    return any(name.endswith(VALUES) for name in tensors)
