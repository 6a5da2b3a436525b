"""Tests for the flat parameter layout used by the simulator and the wire format."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, grad, vmap

from peernet.errors import ModelError
from peernet.models import build_model
from peernet.models.flat import ParamLayout


class Bag(nn.Module):
    """A module holding parameters of arbitrary shapes."""

    def __init__(self, shapes: list[tuple[int, ...]], dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.ps = nn.ParameterList([nn.Parameter(torch.randn(s, dtype=dtype)) for s in shapes])


def _lenet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("lenet", (1, 28, 28))


def test_layout_of_lenet() -> None:
    model = _lenet()
    layout = ParamLayout.of(model)
    params = dict(model.named_parameters())
    assert layout.names == tuple(params)
    assert layout.shapes == tuple(tuple(p.shape) for p in params.values())
    assert layout.numel == sum(p.numel() for p in params.values())
    assert layout.offsets[0] == 0
    assert layout.dtype == torch.float32
    with pytest.raises(dataclasses.FrozenInstanceError):
        layout.numel = 3  # type: ignore[misc]


def test_flatten_unflatten_load_into_round_trip() -> None:
    a, b = _lenet(0), _lenet(1)
    layout = ParamLayout.of(a)
    flat = layout.flatten(a)
    assert flat.shape == (layout.numel,)
    assert flat.dtype == torch.float32 and not flat.requires_grad
    expected = torch.cat([p.detach().reshape(-1) for p in a.parameters()])
    assert torch.equal(flat, expected)

    # flatten copies: changing the vector leaves the module alone.
    saved = flat.clone()
    flat[0] += 1.0
    assert torch.equal(layout.flatten(a), saved)
    flat = saved

    for name, view in layout.unflatten(flat).items():
        assert torch.equal(view, dict(a.named_parameters())[name])

    layout.load_into(b, flat)
    assert torch.equal(layout.flatten(b), flat)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(a(x), b(x))
    assert torch.equal(functional_call(b, layout.unflatten(flat), (x,)), a(x))


def test_unflatten_views_share_storage() -> None:
    layout = ParamLayout.of(_lenet())
    flat = torch.zeros(layout.numel)
    views = layout.unflatten(flat)
    for view in views.values():
        assert view.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
    flat += 2.0
    assert all(bool((v == 2.0).all()) for v in views.values())


def test_unflatten_batched() -> None:
    models = [_lenet(s) for s in range(4)]
    layout = ParamLayout.of(models[0])
    flat = torch.stack([layout.flatten(m) for m in models])
    views = layout.unflatten(flat)
    for name, shape in zip(layout.names, layout.shapes, strict=True):
        assert views[name].shape == (4, *shape)
        assert views[name].untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
        for i, m in enumerate(models):
            assert torch.equal(views[name][i], dict(m.named_parameters())[name])
    # Writing through a view lands in the batched vector.
    views[layout.names[0]][2].zero_()
    assert not flat[2, : layout.offsets[1]].any()
    # Extra leading batch dimensions work too.
    deep = layout.unflatten(torch.zeros(2, 3, layout.numel))
    assert deep[layout.names[-1]].shape == (2, 3, *layout.shapes[-1])


def test_grads_to_flat_matches_cat() -> None:
    model = _lenet()
    layout = ParamLayout.of(model)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    nn.functional.cross_entropy(model(x), y).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    expected = torch.cat([g.reshape(-1) for g in grads.values()])
    assert torch.equal(layout.grads_to_flat(grads), expected)
    # Order comes from the layout, not from the dict.
    assert torch.equal(layout.grads_to_flat(dict(reversed(list(grads.items())))), expected)


def test_grads_to_flat_batched() -> None:
    model = _lenet()
    layout = ParamLayout.of(model)
    flat = torch.stack([layout.flatten(_lenet(s)) for s in range(3)])
    xs, ys = torch.randn(3, 2, 1, 28, 28), torch.randint(0, 10, (3, 2))

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(model, p, (x,)), y)

    grads = vmap(grad(loss))(layout.unflatten(flat), xs, ys)
    out = layout.grads_to_flat(grads, (3,))
    assert out.shape == (3, layout.numel)
    for i in range(3):
        expected = torch.cat([grads[n][i].reshape(-1) for n in layout.names])
        assert torch.equal(out[i], expected)


def test_fingerprint() -> None:
    fp = ParamLayout.of(_lenet(0)).fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert fp == ParamLayout.of(_lenet(1)).fingerprint()  # weights do not matter
    torch.manual_seed(0)
    assert fp != ParamLayout.of(build_model("lenet", (3, 32, 32))).fingerprint()
    assert fp != ParamLayout.of(build_model("lenet", (1, 28, 28), num_classes=5)).fingerprint()
    assert fp != ParamLayout.of(_lenet().double()).fingerprint()


def test_errors() -> None:
    with pytest.raises(ModelError, match="running"):
        ParamLayout.of(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    with pytest.raises(ModelError):
        ParamLayout.of(nn.ReLU())
    mixed = Bag([(2,), (3,)])
    mixed.ps[1].data = mixed.ps[1].data.double()
    with pytest.raises(ModelError, match="dtype"):
        ParamLayout.of(mixed)
    buffered = Bag([(2,)])
    buffered.register_buffer("state", torch.zeros(2))
    with pytest.raises(ModelError, match="buffers"):
        ParamLayout.of(buffered)

    layout = ParamLayout.of(_lenet())
    with pytest.raises(ModelError):
        layout.unflatten(torch.zeros(layout.numel + 1))
    with pytest.raises(ModelError):
        layout.load_into(_lenet(), torch.zeros(2, layout.numel))
    with pytest.raises(ModelError, match="layout"):
        layout.load_into(Bag([(3,)]), torch.zeros(layout.numel))
    with pytest.raises(ModelError, match="missing"):
        layout.grads_to_flat({})
    grads = {n: torch.zeros(s) for n, s in zip(layout.names, layout.shapes, strict=True)}
    with pytest.raises(ModelError, match="shape"):
        layout.grads_to_flat(grads, (2,))
    with pytest.raises(ModelError):
        ParamLayout(("a",), ((2,),), (0,), 3, torch.float32)


shape_st = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(shape_st, min_size=1, max_size=6),
    batch=st.lists(st.integers(1, 3), max_size=2).map(tuple),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(shapes: list[tuple[int, ...]], batch: tuple[int, ...], seed: int) -> None:
    torch.manual_seed(seed)
    module = Bag(shapes)
    layout = ParamLayout.of(module)
    assert layout.shapes == tuple(shapes)
    flat = layout.flatten(module)
    views = layout.unflatten(flat)
    for name, p in module.named_parameters():
        assert torch.equal(views[name], p)

    # load_into of fresh values, then flatten, gives the same values back.
    new = torch.randn(layout.numel)
    layout.load_into(module, new)
    assert torch.equal(layout.flatten(module), new)

    # Batched: unflatten then grads_to_flat (same concatenation) is the identity.
    stacked = torch.randn(*batch, layout.numel)
    bviews = layout.unflatten(stacked)
    for name, shape in zip(layout.names, layout.shapes, strict=True):
        assert bviews[name].shape == batch + shape
    assert torch.equal(layout.grads_to_flat(bviews, batch), stacked)
