"""Multi-layer perceptron: flatten → Linear → ReLU → Linear → ReLU → Linear."""

from __future__ import annotations

import torch
from torch import nn

from peernet.errors import ModelError


class MLP(nn.Module):
    """Two-hidden-layer perceptron on flattened images."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int = 10,
        *,
        hidden1: int = 200,
        hidden2: int = 200,
    ) -> None:
        super().__init__()
        if hidden1 < 1 or hidden2 < 1:
            raise ModelError(f"mlp: hidden sizes must be positive, got ({hidden1}, {hidden2})")
        c, h, w = input_shape
        self.input_shape = input_shape
        self.fc1 = nn.Linear(c * h * w, hidden1)
        self.fc2 = nn.Linear(hidden1, hidden2)
        self.fc3 = nn.Linear(hidden2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, start_dim=1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)
