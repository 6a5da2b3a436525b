"""Model registry: build a GroupNorm-only image classifier by name for a given input shape."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from peernet.errors import ModelError
from peernet.models.flat import ParamLayout
from peernet.models.lenet import LeNet
from peernet.models.mlp import MLP
from peernet.models.resnet import resnet20
from peernet.models.vgg import VGG

MODELS = ("mlp", "lenet", "vgg11", "resnet20")

_BUILDERS: dict[str, Callable[[tuple[int, int, int], int], nn.Module]] = {
    "mlp": MLP,
    "lenet": LeNet,
    "vgg11": VGG,
    "resnet20": resnet20,
}

__all__ = ["MODELS", "ParamLayout", "build_model"]


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int = 10) -> nn.Module:
    """Build model ``name`` for images of shape ``(C, H, W)`` with ``num_classes`` outputs.

    Does not seed: callers run ``torch.manual_seed`` first so every node can start from the same weights.
    Raises ModelError for an unknown name or an input shape the model cannot take.
    """
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ModelError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ModelError(f"{name}: input shape must be three positive ints (C, H, W), got {input_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelError(f"{name}: num_classes must be a positive int, got {num_classes!r}")
    c, h, w = shape
    return builder((c, h, w), num_classes)
