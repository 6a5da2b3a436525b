"""VGG-11 with GroupNorm in place of BatchNorm, usable on 28x28 and 32x32 images."""

from __future__ import annotations

import torch
from torch import nn

from peernet.errors import ModelError

# "M" is a 2x2 max pool; integers are 3x3 conv output channels.
VGG11_CONFIG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    """VGG feature extractor (conv3x3 → GroupNorm → ReLU, max pools) + global pool + linear classifier."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int = 10,
        *,
        config: tuple[int | str, ...] = VGG11_CONFIG,
        groups: int = 32,
    ) -> None:
        super().__init__()
        # No minimum image size: ceil-mode pools never shrink a side below one pixel.
        c, _, _ = input_shape
        self.input_shape = input_shape
        layers: list[nn.Module] = []
        channels = c
        for item in config:
            if item == "M":
                # ceil_mode keeps odd sizes alive: 28 → 14 → 7 → 4 → 2 → 1 instead of hitting 0
                # (a 1x1 map stays 1x1); for 32x32 it is identical to the usual floor pooling.
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                out = int(item)
                if out % groups:
                    raise ModelError(f"vgg: {out} channels are not divisible into {groups} groups")
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.GroupNorm(groups, out), nn.ReLU()]
                channels = out
        self.features = nn.Sequential(*layers)
        # The pools already bring 28x28 and 32x32 to 1x1; the adaptive pool makes any larger input fit too.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, start_dim=1))
