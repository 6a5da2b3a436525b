"""Compressors: round trips, message sizes, determinism of random-k, PowerSGD's cut and warm start."""

from __future__ import annotations

import pytest
import torch

from peernet.core.compressors import (
    COMPRESSORS,
    Compressed,
    LowRank,
    MessageKey,
    kept_entries,
    make_compressor,
    segments,
)
from peernet.errors import CompressionError

KEY = MessageKey(node=3, round=7, name="x")
LENET_SHAPES = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (10, 256), (10,)]


def _vector(size: int = 1000, seed: int = 0) -> torch.Tensor:
    return torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_the_config_names_every_compressor() -> None:
    from peernet.config import COMPRESSION_NAMES

    assert COMPRESSION_NAMES == COMPRESSORS
    for name in COMPRESSORS:
        assert make_compressor(name, shapes=LENET_SHAPES if name == "lowrank" else None).name == name


def test_none_is_exact_and_sends_the_tensor() -> None:
    v = _vector()
    c = make_compressor("none")
    msg, _ = c.compress(v, KEY, ())
    assert torch.equal(c.decode(msg, v), v) and msg.nbytes == 8 * v.numel()


@pytest.mark.parametrize(("name", "dtype", "rel"), [("fp16", torch.float16, 1e-3), ("bf16", torch.bfloat16, 8e-3)])
def test_casts_round_trip_to_their_precision_in_two_bytes(name: str, dtype: torch.dtype, rel: float) -> None:
    v = _vector()
    c = make_compressor(name)
    msg, _ = c.compress(v, KEY, ())
    assert msg.values.dtype == dtype and msg.nbytes == 2 * v.numel()
    back = c.decode(msg, v)
    assert back.dtype == torch.float64
    assert float(((back - v).abs() / v.abs()).max()) <= rel


def test_fp16_clamps_instead_of_overflowing() -> None:
    c = make_compressor("fp16")
    v = torch.tensor([1e6, -1e6, 3.0], dtype=torch.float64)
    back = c.decode(c.compress(v, KEY, ())[0], v)
    assert torch.equal(back, torch.tensor([65504.0, -65504.0, 3.0], dtype=torch.float64))


def test_topk_keeps_the_largest_entries_with_int32_positions() -> None:
    v = _vector()
    c = make_compressor("topk", ratio=0.05)
    msg, _ = c.compress(v, KEY, ())
    k = kept_entries(0.05, 1000)
    assert k == 50 and msg.indices is not None and msg.indices.dtype == torch.int32
    assert msg.nbytes == k * (4 + 8)
    assert torch.equal(msg.indices.long(), torch.sort(torch.topk(v.abs(), k).indices).values)
    back = c.decode(msg, v)
    kept = back != 0
    assert int(kept.sum()) == k and torch.equal(back[kept], v[kept])
    assert float(back.abs().max()) == float(v.abs().max())
    assert float(v[~kept].abs().max()) <= float(v[kept].abs().min())


def test_randk_draws_from_seed_node_round_and_name_only() -> None:
    c = make_compressor("randk", ratio=0.1, seed=5)

    def positions(v: torch.Tensor, key: MessageKey, seed: int = 5) -> torch.Tensor:
        msg, _ = make_compressor("randk", ratio=0.1, seed=seed).compress(v, key, ())
        assert msg.indices is not None
        return msg.indices

    v, w = _vector(seed=1), _vector(seed=2)
    first = positions(v, KEY)
    assert torch.equal(first, positions(w, KEY))  # the values do not matter: daemon and simulator draw alike
    assert len(set(first.tolist())) == 100 and torch.equal(first, first.sort().values)
    for other in (MessageKey(4, 7, "x"), MessageKey(3, 8, "x"), MessageKey(3, 7, "d")):
        assert not torch.equal(first, positions(v, other))
    assert not torch.equal(first, positions(v, KEY, seed=6))
    msg, _ = c.compress(v, KEY, ())
    back = c.decode(msg, v)
    assert torch.equal(back[first.long()], v[first.long()]) and int((back != 0).sum()) == 100


def test_sparse_apply_adds_exactly_the_kept_entries() -> None:
    v, copy = _vector(seed=1), _vector(seed=2)
    for name in ("topk", "randk"):
        c = make_compressor(name, ratio=0.2)
        msg, _ = c.compress(v, KEY, ())
        assert torch.equal(c.apply(copy, msg), copy + c.decode(msg, copy))


def test_lowrank_cuts_by_parameter_shapes() -> None:
    segs = segments(LENET_SHAPES, sum(torch.Size(s).numel() for s in LENET_SHAPES), rank=2)
    assert [(s.rows, s.cols, s.matrix) for s in segs] == [(6, 25, True), (1, 6, False), (16, 150, True),
                                                           (1, 16, False), (10, 256, True), (1, 10, False)]
    assert [s.offset for s in segs] == [0, 150, 156, 2556, 2572, 5132]
    # Without shapes (the quadratic task) the vector is one near-square matrix; a prime length stays a vector.
    assert [(s.rows, s.cols, s.matrix) for s in segments(None, 12, 1)] == [(3, 4, True)]
    assert [(s.rows, s.cols, s.matrix) for s in segments(None, 13, 1)] == [(1, 13, False)]
    assert not segments(None, 12, 2)[0].matrix  # (3 + 4)·2 = 14 ≥ 12: the factors would be larger
    with pytest.raises(CompressionError, match="add up to"):
        segments([(3, 4)], 13, 1)


def test_lowrank_is_exact_on_matrices_of_that_rank_and_sends_the_factors() -> None:
    gen = torch.Generator().manual_seed(0)
    shapes = [(20, 30), (7,)]
    m = torch.randn(20, 2, generator=gen, dtype=torch.float64) @ torch.randn(2, 30, generator=gen,
                                                                             dtype=torch.float64)
    v = torch.cat([m.reshape(-1), torch.arange(7, dtype=torch.float64)])
    c = make_compressor("lowrank", rank=2, shapes=shapes)
    msg, warm = c.compress(v, KEY, ())
    assert [tuple(f.shape) for f in msg.factors] == [(20, 2), (30, 2)] and len(warm) == 1
    assert msg.nbytes == (20 + 30) * 2 * 8 + 7 * 8
    assert float((c.decode(msg, v) - v).abs().max()) <= 1e-12


def test_lowrank_warm_start_tracks_the_leading_subspace() -> None:
    """One power step per round, warm-started: the approximation of a fixed matrix improves round by round."""
    gen = torch.Generator().manual_seed(1)
    u = torch.linalg.qr(torch.randn(40, 40, generator=gen, dtype=torch.float64)).Q
    m = (u * torch.logspace(0, -3, 40, dtype=torch.float64)) @ u.T  # decaying spectrum
    c = make_compressor("lowrank", rank=2, shapes=[(40, 40)])
    warm: tuple[torch.Tensor, ...] = ()
    errors = []
    for r in range(6):
        msg, warm = c.compress(m.reshape(-1), MessageKey(0, r, "x"), warm)
        errors.append(float(torch.linalg.norm(c.decode(msg, m).reshape(40, 40) - m)))
    best = float(torch.linalg.norm(m - (u[:, :2] * torch.logspace(0, -3, 40, dtype=torch.float64)[:2]) @ u[:, :2].T))
    assert errors[-1] < errors[0] and errors[-1] <= 1.01 * best


def test_lowrank_start_is_deterministic_per_node_and_tensor() -> None:
    v = _vector(1200)
    c = LowRank(2, seed=9, shapes=[(30, 40)])
    a, _ = c.compress(v, KEY, ())
    b, _ = LowRank(2, seed=9, shapes=[(30, 40)]).compress(v, MessageKey(3, 99, "x"), ())  # the round does not seed it
    other, _ = c.compress(v, MessageKey(4, 7, "x"), ())
    assert all(torch.equal(x, y) for x, y in zip(a.factors, b.factors, strict=True))
    assert not torch.equal(a.factors[1], other.factors[1])


def test_bad_settings_and_mismatched_messages_are_refused() -> None:
    with pytest.raises(CompressionError, match="unknown compressor"):
        make_compressor("zip")
    with pytest.raises(CompressionError, match=r"\(0, 1\]"):
        make_compressor("topk", ratio=1.5)
    with pytest.raises(CompressionError, match="rank"):
        make_compressor("lowrank", rank=0)


def test_messages_that_do_not_fit_are_refused_before_use() -> None:
    """What a daemon receives is checked against the tensor it will be added to (kind, size, shapes, positions)."""
    v = _vector(100)
    top = make_compressor("topk", ratio=0.1)
    good, _ = top.compress(v, KEY, ())
    top.check(good, 100)
    assert good.indices is not None
    bad = {
        "kind": Compressed("randk", 100, good.values, good.indices),
        "size": Compressed("topk", 99, good.values, good.indices),
        "count": Compressed("topk", 100, good.values[:5], good.indices[:5]),
        "no positions": Compressed("topk", 100, good.values),
        "outside": Compressed("topk", 100, good.values, good.indices + 100),
        "repeated": Compressed("topk", 100, good.values, torch.zeros(10, dtype=torch.int32)),
        "float positions": Compressed("topk", 100, good.values, good.indices.double()),
    }
    for what, msg in bad.items():
        with pytest.raises(CompressionError):
            top.check(msg, 100)
        assert what
    low = make_compressor("lowrank", rank=1, shapes=[(10, 8), (20,)])
    msg, _ = low.compress(v, KEY, ())
    low.check(msg, 100)
    with pytest.raises(CompressionError, match="shapes"):
        low.check(Compressed("lowrank", 100, msg.values, None, (msg.factors[0], msg.factors[0])), 100)
    with pytest.raises(CompressionError, match="shapes"):
        make_compressor("fp16").check(Compressed("fp16", 100, v[:50]), 100)
