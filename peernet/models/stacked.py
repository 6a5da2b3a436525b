"""Node-stacked forward passes: N copies of a model with different weights, evaluated in one call.

``torch.func.vmap`` over convolutions is correct but slow on CPU (measured 7× slower than a plain
per-node loop for 8 LeNet nodes), so for the layer types our models use we write the node-batched
computation directly: convolutions become one grouped convolution with the nodes as groups (node-major
channels), GroupNorm one GroupNorm with N× the groups, linear layers one ``baddbmm``. Summing the
nodes' mean losses and calling backward once then gives every node's own gradient, because no node's
loss depends on another node's weights.

Activations of the conv part have shape ``(B, N·C, H, W)``; of the dense part ``(N, B, F)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from peernet.models.lenet import LeNet
from peernet.models.mlp import MLP
from peernet.models.vgg import VGG

Params = dict[str, torch.Tensor]
StackedForward = Callable[[Params, torch.Tensor], torch.Tensor]


def _to_channels(x: torch.Tensor) -> torch.Tensor:
    """(N, B, C, H, W) → (B, N·C, H, W) with node-major channels."""
    n, b, c, h, w = x.shape
    return x.transpose(0, 1).reshape(b, n * c, h, w)


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv2d) -> torch.Tensor:
    n = weight.shape[0]
    return F.conv2d(x, weight.reshape(-1, *weight.shape[2:]), None if bias is None else bias.reshape(-1),
                    stride=conv.stride, padding=conv.padding, groups=n)


def _group_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gn: nn.GroupNorm) -> torch.Tensor:
    n = weight.shape[0]
    return F.group_norm(x, n * gn.num_groups, weight.reshape(-1), bias.reshape(-1), gn.eps)


def _flatten_nodes(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N·C, H, W) → (N, B, C·H·W), matching torch.flatten(start_dim=1) per node."""
    b = x.shape[0]
    return x.reshape(b, n, -1).transpose(0, 1)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _three_layer_head(p: Params, h: torch.Tensor) -> torch.Tensor:
    """fc1 → ReLU → fc2 → ReLU → fc3 on ``(N, B, F)`` features (the MLP and LeNet's classifier)."""
    h = torch.relu(_linear(h, p["fc1.weight"], p["fc1.bias"]))
    h = torch.relu(_linear(h, p["fc2.weight"], p["fc2.bias"]))
    return _linear(h, p["fc3.weight"], p["fc3.bias"])


def _mlp(model: MLP) -> StackedForward:
    def forward(p: Params, x: torch.Tensor) -> torch.Tensor:
        return _three_layer_head(p, x.reshape(x.shape[0], x.shape[1], -1))

    return forward


def _lenet(model: LeNet) -> StackedForward:
    def forward(p: Params, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        h = _to_channels(x)
        h = _conv(h, p["conv1.weight"], p["conv1.bias"], model.conv1)
        h = F.max_pool2d(torch.relu(_group_norm(h, p["gn1.weight"], p["gn1.bias"], model.gn1)), 2)
        h = _conv(h, p["conv2.weight"], p["conv2.bias"], model.conv2)
        h = F.max_pool2d(torch.relu(_group_norm(h, p["gn2.weight"], p["gn2.bias"], model.gn2)), 2)
        return _three_layer_head(p, _flatten_nodes(h, n))

    return forward


def _vgg(model: VGG) -> StackedForward:
    def forward(p: Params, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        h = _to_channels(x)
        for i, layer in enumerate(model.features):
            name = f"features.{i}"
            if isinstance(layer, nn.Conv2d):
                h = _conv(h, p[f"{name}.weight"], p.get(f"{name}.bias"), layer)
            elif isinstance(layer, nn.GroupNorm):
                h = _group_norm(h, p[f"{name}.weight"], p[f"{name}.bias"], layer)
            else:  # ReLU and MaxPool2d act per channel, so they apply to stacked channels unchanged.
                h = layer(h)
        h = _flatten_nodes(model.pool(h), n)
        return _linear(h, p["classifier.weight"], p["classifier.bias"])

    return forward


def stacked_forward(model: nn.Module) -> StackedForward | None:
    """A node-stacked forward ``(params (N,…), x (N, B, C, H, W)) → logits (N, B, K)``, or None.

    None means the architecture has no hand-written stacked form (ResNet's residual blocks); callers
    then fall back to ``torch.func.vmap``.
    """
    if isinstance(model, LeNet):
        return _lenet(model)
    if isinstance(model, MLP):
        return _mlp(model)
    if isinstance(model, VGG):
        return _vgg(model)
    return None
