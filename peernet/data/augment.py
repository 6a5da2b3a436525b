"""Random-crop augmentation that is a pure function of (seed, node, round), like the mini-batches."""

from __future__ import annotations

import numpy as np
import torch


def crop_padding(height: int) -> int:
    """Zero padding of each side before cropping back: an eighth of the side (3 for 28×28, 4 for 32×32)."""
    return max(1, height // 8)


def crop_offsets(seed: int, node: int, round_: int, batch: int, pad: int) -> np.ndarray:
    """Per-sample (dy, dx) window offsets in [0, 2·pad], seeded by (seed, node, round) only."""
    rng = np.random.default_rng([seed, node, round_, 0xC409])
    return rng.integers(0, 2 * pad + 1, size=(batch, 2))


def random_crop(images: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad (B, C, H, W) images with zeros by ``pad`` and cut each back to H×W at its own offset."""
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(w, device=images.device)  # (B, W)
    bi = torch.arange(b, device=images.device)[:, None, None, None]
    ci = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
