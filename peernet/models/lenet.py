"""LeNet-5 with GroupNorm, as used by Takezawa et al. (TMLR 2023, "Momentum Tracking")."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from peernet.errors import ModelError


def _feature_size(n: int) -> int:
    """Spatial size after conv5 → pool2 → conv5 → pool2 (no padding)."""
    return ((n - 4) // 2 - 4) // 2


class LeNet(nn.Module):
    """Two conv + GroupNorm blocks followed by three fully-connected layers."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int = 10) -> None:
        super().__init__()
        c, h, w = input_shape
        sh, sw = _feature_size(h), _feature_size(w)
        if sh < 1 or sw < 1:
            raise ModelError(f"lenet needs images of at least 16x16, got {h}x{w}")
        self.input_shape = input_shape
        self.conv1 = nn.Conv2d(c, 6, 5)
        self.gn1 = nn.GroupNorm(2, 6)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.gn2 = nn.GroupNorm(2, 16)
        self.fc1 = nn.Linear(16 * sh * sw, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.gn1(self.conv1(x))), 2)
        x = F.max_pool2d(torch.relu(self.gn2(self.conv2(x))), 2)
        x = torch.flatten(x, start_dim=1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)
