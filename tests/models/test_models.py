"""Tests for the model registry: shapes, GroupNorm-only, determinism and vmap/functional_call safety."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from peernet.errors import ModelError
from peernet.models import MODELS, build_model
from peernet.models.flat import ParamLayout

SHAPES = {"fmnist": (1, 28, 28), "cifar": (3, 32, 32)}


def _build(name: str, shape: tuple[int, int, int], seed: int = 0, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, shape, num_classes)


def test_registry_names() -> None:
    assert MODELS == ("mlp", "lenet", "vgg11", "resnet20")


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", MODELS)
def test_output_shape_and_groupnorm_only(name: str, shape: tuple[int, int, int]) -> None:
    model = _build(name, shape, num_classes=7)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    assert list(model.buffers()) == []
    ParamLayout.of(model)  # every registered model must fit the flat layout


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ModelError) as info:
        build_model("alexnet", (3, 32, 32))
    for name in MODELS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("name", "shape", "num_classes"),
    [
        ("lenet", (1, 8, 8), 10),  # too small for two conv5 + pool2 stages
        ("lenet", (1, 28, 12), 10),
        ("mlp", (0, 28, 28), 10),
        ("mlp", (28, 28), 10),
        ("resnet20", (3, 32, -1), 10),
        ("vgg11", (3, 32, 32), 0),
    ],
)
def test_bad_shapes_raise(name: str, shape: tuple[int, ...], num_classes: int) -> None:
    with pytest.raises(ModelError):
        build_model(name, shape, num_classes)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_parameters(name: str) -> None:
    shape = SHAPES["fmnist"]
    a, b, c = _build(name, shape, 3), _build(name, shape, 3), _build(name, shape, 4)
    layout = ParamLayout.of(a)
    assert torch.equal(layout.flatten(a), layout.flatten(b))
    assert not torch.equal(layout.flatten(a), layout.flatten(c))


def test_mlp_and_lenet_architecture() -> None:
    mlp = _build("mlp", (3, 32, 32))
    assert [m.in_features for m in mlp.modules() if isinstance(m, nn.Linear)] == [3072, 200, 200]
    assert sum(p.numel() for p in mlp.parameters()) == 3072 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10
    for shape, s in ((SHAPES["fmnist"], 4), (SHAPES["cifar"], 5)):
        lenet = _build("lenet", shape)
        fcs = [m for m in lenet.modules() if isinstance(m, nn.Linear)]
        assert [(m.in_features, m.out_features) for m in fcs] == [(16 * s * s, 120), (120, 84), (84, 10)]
        gns = [(m.num_groups, m.num_channels) for m in lenet.modules() if isinstance(m, nn.GroupNorm)]
        assert gns == [(2, 6), (2, 16)]


def test_vgg_and_resnet_architecture() -> None:
    vgg = _build("vgg11", SHAPES["cifar"])
    convs = [m.out_channels for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [64, 128, 256, 256, 512, 512, 512, 512]
    assert all(m.num_groups == 32 for m in vgg.modules() if isinstance(m, nn.GroupNorm))
    assert sum(isinstance(m, nn.MaxPool2d) for m in vgg.modules()) == 5

    resnet = _build("resnet20", SHAPES["cifar"])
    convs3 = [m for m in resnet.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    convs1 = [m for m in resnet.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    fcs = [m for m in resnet.modules() if isinstance(m, nn.Linear)]
    assert len(convs3) + len(fcs) == 20  # the "20" in ResNet-20
    assert [(m.in_channels, m.out_channels, m.stride) for m in convs1] == [(16, 32, (2, 2)), (32, 64, (2, 2))]
    for m in resnet.modules():
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0


def test_odd_and_small_inputs() -> None:
    # ceil-mode pools and adaptive pooling let VGG / ResNet take any size, tiny ones included.
    for name in ("vgg11", "resnet20"):
        for shape in ((1, 17, 23), (3, 9, 9)):
            assert _build(name, shape)(torch.randn(1, *shape)).shape == (1, 10)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", MODELS)
def test_vmap_matches_loop(name: str, shape: tuple[int, int, int]) -> None:
    """Per-node vmap over stacked parameter sets gives the same outputs and grads as a Python loop."""
    n_nodes = 3
    batch = 1 if name == "vgg11" else 2  # VGG dominates the suite's run time
    models = [_build(name, shape, seed) for seed in range(n_nodes)]
    layout = ParamLayout.of(models[0])
    flat = torch.stack([layout.flatten(m) for m in models])  # (n_nodes, numel)
    torch.manual_seed(100)
    xs = torch.randn(n_nodes, batch, *shape)
    ys = torch.randint(0, 10, (n_nodes, batch))
    module = models[0]

    def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(module, params, (x,))

    def loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(forward(params, x), y)

    params = layout.unflatten(flat)
    out_v = vmap(forward)(params, xs)
    grads_v = layout.grads_to_flat(vmap(grad(loss))(params, xs, ys), (n_nodes,))

    for i in range(n_nodes):
        p_i = layout.unflatten(flat[i])
        out_i = forward(p_i, xs[i])
        grads_i = layout.grads_to_flat(grad(loss)(p_i, xs[i], ys[i]))
        assert (out_v[i] - out_i).abs().max().item() <= 1e-5
        assert (grads_v[i] - grads_i).abs().max().item() <= 1e-5
        # The module itself must agree with functional_call on its own parameters.
        assert torch.allclose(models[i](xs[i]), out_i, atol=1e-6, rtol=0)
    assert math.isfinite(grads_v.abs().sum().item())
