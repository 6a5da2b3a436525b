"""Node-stacked ``(N, P)`` tensors stored block-major: ``(blocks, N, width)``, each column block contiguous.

The simulator applies the rule one column block at a time. Stored row-major, a block of 4,096 nodes is
4,096 short segments on 4,096 pages; stored block-major it is one contiguous run of memory, and the rule
runs about twice as fast at that size (measured, docs/algorithms.md). Rows — one node's parameters —
are what the gradient code reads and writes; they are gathered from and scattered to the blocks.
Columns past ``P`` in the last block are padding: zero parameters, gradients and state stay zero under
every rule.
"""

from __future__ import annotations

import math

import torch


class BlockStack:
    """An ``(n, p)`` node-stacked tensor kept as ``(blocks, n, width)``; index it by node like a tensor."""

    def __init__(self, n: int, p: int, width: int, dtype: torch.dtype, device: torch.device) -> None:
        self.n, self.p = n, p
        self.width = max(1, min(width, p))
        self.blocks = math.ceil(p / self.width)
        self.data = torch.zeros(self.blocks, n, self.width, dtype=dtype, device=device)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.p)

    def block(self, k: int) -> torch.Tensor:
        """Columns ``k·width …`` of every node: a contiguous ``(n, width)`` view."""
        return self.data[k]

    def _rows(self, lo: int, hi: int) -> torch.Tensor:
        if self.blocks == 1:
            return self.data[0, lo:hi, :self.p]
        return self.data[:, lo:hi, :].permute(1, 0, 2).reshape(hi - lo, -1)[:, :self.p]

    def __getitem__(self, key: int | slice) -> torch.Tensor:
        """Node ``key``'s row ``(p,)`` or rows ``(k, p)`` (a copy unless there is a single block)."""
        if isinstance(key, slice):
            lo, hi, step = key.indices(self.n)
            if step != 1:
                raise IndexError("BlockStack rows: slices with a step are not supported")
            return self._rows(lo, hi)
        i = key + self.n if key < 0 else key
        return self._rows(i, i + 1)[0]

    def __setitem__(self, key: int | slice, value: torch.Tensor) -> None:
        if isinstance(key, slice):
            lo, hi, _ = key.indices(self.n)
        else:
            lo = key + self.n if key < 0 else key
            hi = lo + 1
        rows = value.reshape(hi - lo, self.p)
        whole = (self.blocks - 1) * self.width
        if self.blocks > 1:
            self.data[:-1, lo:hi, :].copy_(rows[:, :whole].reshape(hi - lo, self.blocks - 1, self.width)
                                           .transpose(0, 1))
        self.data[-1, lo:hi, :self.p - whole].copy_(rows[:, whole:])

    def full(self) -> torch.Tensor:
        """The whole ``(n, p)`` tensor (a copy unless there is a single block)."""
        return self._rows(0, self.n)

    def fill_rows(self, row: torch.Tensor) -> None:
        """Every node's row set to ``row (p,)``."""
        self[:] = row.unsqueeze(0).expand(self.n, self.p)
