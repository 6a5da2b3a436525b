"""Message compressors for gossip (fp16, bf16, top-k, random-k, PowerSGD low rank): pure torch, no I/O.

A compressor turns one node's ``(P,)`` tensor into a :class:`Compressed` message — a few typed tensors, what
the daemon puts on the wire — and turns a message back into a dense ``(P,)`` tensor. Compressed gossip
(peernet/core/compressed_gossip.py) compresses the *change* of a node's public copy, never the value itself,
so whatever a compressor drops is sent in later rounds (docs/algorithms.md, "Compressed exchange").

Everything a compressor draws at random is a pure function of (run seed, node index, round, tensor name), so
the simulator and every daemon draw the same indices and the same initial factors.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from peernet.errors import CompressionError

Tensor = torch.Tensor
COMPRESSORS = ("none", "fp16", "bf16", "topk", "randk", "lowrank")
#: Fraction of entries top-k and random-k keep when ``compression_ratio`` is unset.
DEFAULT_RATIO = 0.1
#: Rank of the PowerSGD factors when ``compression_rank`` is unset.
DEFAULT_RANK = 2
#: Largest int32 index; longer tensors get int64 indices.
_INT32_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class Compressed:
    """One node's message for one gossiped tensor of ``size`` entries.

    ``values``: the dense cast values (none, fp16, bf16), the kept entries (topk, randk), or, for lowrank,
    the segments sent as they are, concatenated in layout order. ``indices``: the kept entries' positions,
    ascending (topk, randk). ``factors``: lowrank's ``P_0, Q_0, P_1, Q_1, ...``, one pair per compressed matrix.
    """

    kind: str
    size: int
    values: Tensor
    indices: Tensor | None = None
    factors: tuple[Tensor, ...] = ()

    def tensors(self) -> tuple[Tensor, ...]:
        """Every tensor of the message, in wire order: values, indices (if any), then the factors."""
        return (self.values, *(() if self.indices is None else (self.indices,)), *self.factors)

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data the message carries (headers not counted)."""
        return sum(t.numel() * t.element_size() for t in self.tensors())


@dataclass(frozen=True)
class MessageKey:
    """Who sends what when: the node's index in the topology, the 0-based round, the gossiped tensor's name."""

    node: int
    round: int
    name: str


Warm = tuple[Tensor, ...]
"""A compressor's own state per node and tensor, kept by the sender only (lowrank: the warm-started Q's)."""


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (run seed, node, round, name ...): the same on every machine and Python."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & (2**63 - 1)


class Compressor:
    """Compress a node's ``(P,)`` tensor into a message, decode a message, add a message to a public copy."""

    name = ""
    #: Elementwise compressors give the same bits on ``(N, P)`` as row by row, so they may take whole stacks.
    elementwise = False

    def compress(self, v: Tensor, key: MessageKey, warm: Warm) -> tuple[Compressed, Warm]:
        """The message for ``v`` and the sender's state after it (``warm`` is not modified)."""
        raise NotImplementedError

    def decode(self, msg: Compressed, like: Tensor) -> Tensor:
        """The dense tensor ``msg`` stands for, in ``like``'s dtype and device."""
        raise NotImplementedError

    def apply(self, copy: Tensor, msg: Compressed) -> Tensor:
        """``copy + decode(msg)``, out of place: the public copy after the message (every holder adds alike)."""
        return copy + self.decode(msg, copy)

    def default_gamma(self, size: int) -> float:
        """The consensus step γ for a tensor of ``size`` entries when none is set (docs/algorithms.md)."""
        return 1.0

    def check(self, msg: Compressed, size: int) -> None:
        """CompressionError unless ``msg`` is this compressor's message for a tensor of ``size`` entries, with
        tensors of the shapes that decoding it assumes (a message from the network is checked before it is used)."""
        if msg.kind != self.name or msg.size != size:
            raise CompressionError(f"a {msg.kind} message of {msg.size} entries where a {self.name} message of "
                                   f"{size} was expected")
        expected = self.message_shapes(size)
        got = [tuple(t.shape) for t in msg.tensors()]
        if got != expected:
            raise CompressionError(f"{self.name} message tensors of shapes {got}, expected {expected}")

    def message_shapes(self, size: int) -> list[tuple[int, ...]]:
        """The shapes of a message's tensors (``Compressed.tensors()`` order) for a tensor of ``size`` entries."""
        return [(size,)]

    def message_dtypes(self, size: int, dtype: torch.dtype) -> list[torch.dtype]:
        """The dtypes of a message's tensors (``Compressed.tensors()`` order) for a tensor of ``size`` entries in
        ``dtype``: with :meth:`message_shapes`, the layout a receiver checks a message against before reading it."""
        return [dtype] * len(self.message_shapes(size))


class Identity(Compressor):
    """No compression: the tensor itself (what plain gossip sends)."""

    name = "none"
    elementwise = True

    def compress(self, v: Tensor, key: MessageKey, warm: Warm) -> tuple[Compressed, Warm]:
        return Compressed(self.name, v.shape[-1], v), warm

    def decode(self, msg: Compressed, like: Tensor) -> Tensor:
        return msg.values.to(dtype=like.dtype, device=like.device)


class Cast(Compressor):
    """Cast to a 16-bit float and back: fp16 (10-bit mantissa, range ±65,504) or bf16 (8-bit mantissa, fp32 range).

    Values beyond the format's range are clamped to its largest finite value instead of becoming inf: the rest
    stays in the difference between the node's value and its public copy and is sent in the following rounds.
    """

    elementwise = True

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name, self.dtype = name, dtype
        self.limit = torch.finfo(dtype).max

    def compress(self, v: Tensor, key: MessageKey, warm: Warm) -> tuple[Compressed, Warm]:
        return Compressed(self.name, v.shape[-1], v.clamp(-self.limit, self.limit).to(self.dtype)), warm

    def decode(self, msg: Compressed, like: Tensor) -> Tensor:
        return msg.values.to(dtype=like.dtype, device=like.device)

    def message_dtypes(self, size: int, dtype: torch.dtype) -> list[torch.dtype]:
        return [self.dtype]


def kept_entries(ratio: float, size: int) -> int:
    """How many of ``size`` entries top-k and random-k keep: ``ratio·size`` rounded, at least one."""
    return max(1, min(size, round(ratio * size)))


def _index_dtype(size: int) -> torch.dtype:
    return torch.int32 if size <= _INT32_LIMIT else torch.int64


class Sparse(Compressor):
    """Keep ``k = ratio·P`` entries: their positions (ascending, int32) and their values in the tensor's dtype."""

    def __init__(self, ratio: float) -> None:
        if not 0 < ratio <= 1:
            raise CompressionError(f"the fraction of entries kept must be in (0, 1], got {ratio}")
        self.ratio = ratio

    def indices(self, v: Tensor, key: MessageKey, k: int) -> Tensor:
        raise NotImplementedError

    def fraction(self, size: int) -> float:
        """The fraction of entries a message carries (k/P after rounding k)."""
        return kept_entries(self.ratio, size) / size

    def message_shapes(self, size: int) -> list[tuple[int, ...]]:
        k = kept_entries(self.ratio, size)
        return [(k,), (k,)]

    def message_dtypes(self, size: int, dtype: torch.dtype) -> list[torch.dtype]:
        return [dtype, _index_dtype(size)]

    def check(self, msg: Compressed, size: int) -> None:
        super().check(msg, size)
        idx = msg.indices
        # Distinct positions inside the tensor: each kept entry is then one addition (see apply).
        if (idx is None or msg.factors or idx.dtype not in (torch.int32, torch.int64) or int(idx[0]) < 0
                or int(idx[-1]) >= size or bool((idx[1:] <= idx[:-1]).any())):
            raise CompressionError(f"{self.name} message positions are not ascending integers in [0, {size})")

    def compress(self, v: Tensor, key: MessageKey, warm: Warm) -> tuple[Compressed, Warm]:
        size = v.shape[-1]
        idx = self.indices(v, key, kept_entries(self.ratio, size)).sort().values
        return Compressed(self.name, size, v[idx], idx.to(_index_dtype(size))), warm

    def decode(self, msg: Compressed, like: Tensor) -> Tensor:
        return self.apply(torch.zeros(msg.size, dtype=like.dtype, device=like.device), msg)

    def apply(self, copy: Tensor, msg: Compressed) -> Tensor:
        # Positions are distinct, so each kept entry is one addition, as ``copy + decode(msg)`` would do it.
        assert msg.indices is not None
        return copy.clone().index_add_(0, msg.indices.to(device=copy.device, dtype=torch.int64),
                                       msg.values.to(copy.dtype))


class TopK(Sparse):
    """The ``k`` entries of largest magnitude (Stich et al. 2018); ties go as ``torch.topk`` breaks them."""

    name = "topk"

    def indices(self, v: Tensor, key: MessageKey, k: int) -> Tensor:
        return torch.topk(v.abs(), k, sorted=False).indices

    def default_gamma(self, size: int) -> float:
        # About 3k/P for small k/P (1 − (1 − ρ)³, which reaches 1 with ρ): some 60% of the largest γ that was
        # stable on the 8-node ring, where that edge followed 1 − (1 − ρ)⁵.
        return 1 - (1 - self.fraction(size)) ** 3


class RandK(Sparse):
    """``k`` entries drawn uniformly without replacement, from (run seed, node, round, tensor name).

    Not rescaled by P/k: CHOCO needs a contraction, ``‖C(v) − v‖² ≤ (1 − k/P)‖v‖²``, which the unbiased,
    rescaled form is not. A receiver could redraw the positions itself; the message still carries them so that
    every message decodes on its own.
    """

    name = "randk"

    def __init__(self, ratio: float, seed: int) -> None:
        super().__init__(ratio)
        self.seed = seed

    def default_gamma(self, size: int) -> float:
        # Random positions shrink the change far less than the largest ones: the stable edge on the 8-node ring
        # was about 1.3·k/P, so half of k/P.
        return self.fraction(size) / 2

    def indices(self, v: Tensor, key: MessageKey, k: int) -> Tensor:
        gen = torch.Generator().manual_seed(derived_seed(self.seed, "randk", key.node, key.round, key.name))
        return torch.randperm(v.shape[-1], generator=gen)[:k].to(v.device)


@dataclass(frozen=True)
class Segment:
    """Entries ``offset … offset + rows·cols`` of the flat vector, sent as a ``rows × cols`` matrix of rank r,
    or as they are (``matrix`` false)."""

    offset: int
    rows: int
    cols: int
    matrix: bool

    @property
    def numel(self) -> int:
        return self.rows * self.cols


def near_square(size: int) -> tuple[int, int]:
    """``(m, size/m)`` with ``m`` the largest divisor of ``size`` not above √size (a prime gives ``(1, size)``)."""
    m = max(d for d in range(1, math.isqrt(size) + 1) if size % d == 0)
    return m, size // m


def segments(shapes: Sequence[tuple[int, ...]] | None, size: int, rank: int) -> tuple[Segment, ...]:
    """How lowrank cuts a flat vector: one segment per parameter tensor, in layout order.

    A parameter of two or more dimensions is the matrix ``shape[0] × prod(shape[1:])`` (a convolution's output
    channels by the rest, as PowerSGD does); it is sent as rank-``rank`` factors when those are smaller than the
    matrix (``(m + n)·r < m·n``), else as it is, as vectors (biases, norms) always are. Without shapes (the
    quadratic task) the whole vector is one near-square matrix (:func:`near_square`).
    """
    if shapes is None:
        shapes = [near_square(size)]
    out: list[Segment] = []
    offset = 0
    for shape in shapes:
        m, n = (shape[0], math.prod(shape[1:])) if len(shape) > 1 else (1, math.prod(shape))
        out.append(Segment(offset, m, n, (m + n) * rank < m * n))
        offset += m * n
    if offset != size:
        raise CompressionError(f"the parameter shapes add up to {offset} entries, the tensor has {size}")
    return tuple(out)


class LowRank(Compressor):
    """PowerSGD (Vogels, Karimireddy, Jaggi 2019): each matrix segment as rank-r factors ``P Qᵀ``, one power step.

    ``P = orthonormal(M Q)``, ``Q' = Mᵀ P``, message ``(P, Q')``, decoded as ``P Q'ᵀ``. The sender keeps ``Q'`` as the
    next round's starting ``Q`` (the warm start that lets one power step per round track the leading subspace);
    the first ``Q`` is Gaussian from (run seed, node, tensor name, segment). Segments that are not matrices go as
    they are, in ``values``. Each segment is copied out before the products, so a row of a node-stacked tensor
    and a daemon's own tensor are multiplied from equally aligned memory and give the same bits.
    """

    name = "lowrank"

    def __init__(self, rank: int, seed: int, shapes: Sequence[tuple[int, ...]] | None = None) -> None:
        if rank < 1:
            raise CompressionError(f"the rank must be >= 1, got {rank}")
        self.rank, self.seed, self.shapes = rank, seed, shapes
        self._segments: dict[int, tuple[Segment, ...]] = {}

    def segments(self, size: int) -> tuple[Segment, ...]:
        if size not in self._segments:
            self._segments[size] = segments(self.shapes, size, self.rank)
        return self._segments[size]

    def message_shapes(self, size: int) -> list[tuple[int, ...]]:
        segs = self.segments(size)
        factors = [shape for s in segs if s.matrix for shape in ((s.rows, self.rank), (s.cols, self.rank))]
        return [(sum(s.numel for s in segs if not s.matrix),), *factors]

    def fraction(self, size: int) -> float:
        """Entries of the factors over entries of the matrices they stand for (1 when nothing is a matrix)."""
        matrices = [s for s in self.segments(size) if s.matrix]
        if not matrices:
            return 1.0
        return sum((s.rows + s.cols) * self.rank for s in matrices) / sum(s.numel for s in matrices)

    def default_gamma(self, size: int) -> float:
        # The stable edge on the 8-node ring was about 1.5× the fraction the factors take of the matrices.
        return min(1.0, self.fraction(size))

    def _start(self, v: Tensor, key: MessageKey, k: int, seg: Segment) -> Tensor:
        gen = torch.Generator().manual_seed(derived_seed(self.seed, "lowrank", key.node, key.name, k))
        return torch.randn(seg.cols, self.rank, generator=gen, dtype=v.dtype).to(v.device)

    def compress(self, v: Tensor, key: MessageKey, warm: Warm) -> tuple[Compressed, Warm]:
        segs = self.segments(v.shape[-1])
        matrices = [s for s in segs if s.matrix]
        starts = warm or tuple(self._start(v, key, k, s) for k, s in enumerate(matrices))
        factors: list[Tensor] = []
        for seg, q in zip(matrices, starts, strict=True):
            m = v[seg.offset:seg.offset + seg.numel].clone().view(seg.rows, seg.cols)
            p = torch.linalg.qr(m @ q).Q  # reduced QR: orthonormal columns even where M Q is rank-deficient
            factors += [p, m.T @ p]
        plain = [v[s.offset:s.offset + s.numel] for s in segs if not s.matrix]
        values = torch.cat(plain) if plain else v.new_zeros(0)
        return Compressed(self.name, v.shape[-1], values, None, tuple(factors)), tuple(factors[1::2])

    def decode(self, msg: Compressed, like: Tensor) -> Tensor:
        out = torch.empty(msg.size, dtype=like.dtype, device=like.device)
        taken, pairs = 0, iter(zip(msg.factors[0::2], msg.factors[1::2], strict=True))
        for seg in self.segments(msg.size):
            dst = out[seg.offset:seg.offset + seg.numel]
            if seg.matrix:
                p, q = next(pairs)
                dst.copy_((p @ q.T).reshape(-1))
            else:
                dst.copy_(msg.values[taken:taken + seg.numel])
                taken += seg.numel
        return out


def make_compressor(name: str, *, ratio: float | None = None, rank: int | None = None, seed: int = 0,
                    shapes: Sequence[tuple[int, ...]] | None = None) -> Compressor:
    """The compressor a run's settings name (``ratio``: top-k/random-k, ``rank``: lowrank; unset: the defaults).

    ``shapes`` are the model's parameter shapes in layout order, for lowrank; ``seed`` the run seed.
    """
    if name == "none":
        return Identity()
    if name in ("fp16", "bf16"):
        return Cast(name, torch.float16 if name == "fp16" else torch.bfloat16)
    if name == "topk":
        return TopK(DEFAULT_RATIO if ratio is None else ratio)
    if name == "randk":
        return RandK(DEFAULT_RATIO if ratio is None else ratio, seed)
    if name == "lowrank":
        return LowRank(DEFAULT_RANK if rank is None else rank, seed, shapes)
    raise CompressionError(f"unknown compressor {name!r}; choose one of: {', '.join(COMPRESSORS)}")
