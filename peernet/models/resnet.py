"""CIFAR-style ResNet-20 with GroupNorm and 1x1-conv (option B) shortcuts."""

from __future__ import annotations

import math

import torch
from torch import nn

from peernet.errors import ModelError


def group_norm(channels: int, groups: int = 2) -> nn.GroupNorm:
    """GroupNorm whose group count always divides ``channels`` (falls back to the gcd)."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class BasicBlock(nn.Module):
    """conv3x3 → GN → ReLU → conv3x3 → GN, plus shortcut, then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, groups: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.gn1 = group_norm(out_ch, groups)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.gn2 = group_norm(out_ch, groups)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), group_norm(out_ch, groups)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.gn1(self.conv1(x)))
        out = self.gn2(self.conv2(out))
        # Out-of-place add: under vmap the two operands may differ in batching.
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Three stages of ``blocks_per_stage`` basic blocks (16/32/64 channels), global pool, linear head."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int = 10,
        *,
        blocks_per_stage: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        groups: int = 2,
    ) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ModelError(f"resnet: blocks_per_stage must be >= 1, got {blocks_per_stage}")
        c, _, _ = input_shape
        self.input_shape = input_shape
        self.conv1 = nn.Conv2d(c, widths[0], 3, padding=1, bias=False)
        self.gn1 = group_norm(widths[0], groups)
        blocks: list[nn.Module] = []
        in_ch = widths[0]
        for stage, width in enumerate(widths):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_ch, width, stride, groups))
                in_ch = width
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.gn1(self.conv1(x)))
        x = self.pool(self.layers(x))
        return self.fc(torch.flatten(x, start_dim=1))


def resnet20(input_shape: tuple[int, int, int], num_classes: int = 10) -> ResNet:
    """ResNet-20: 3 stages x 3 basic blocks x 2 convs + stem conv + classifier = 20 layers."""
    return ResNet(input_shape, num_classes, blocks_per_stage=3)
