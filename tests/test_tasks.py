"""Tests for the image task's lean data path: a daemon's task holds only its own rows and sees the same data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peernet.config import RunSettings
from peernet.tasks import ImageTask, make_task, rounds_per_epoch


@pytest.mark.parametrize("augment", ["none", "crop"])
def test_one_nodes_task_sees_the_simulators_batches_and_scores(augment: str) -> None:
    settings = RunSettings(dataset="fashion-mnist", model="mlp", nodes=8, batch_size=32, partition="classes",
                           val_fraction=0.05, eval_samples=300, augment=augment)
    shared = make_task(settings, 8)
    assert isinstance(shared, ImageTask)
    x = shared.initial_params() + 0.01 * torch.randn(shared.dim, generator=torch.Generator().manual_seed(1))
    for node in (0, 5):
        mine = make_task(settings, 8, node)
        assert isinstance(mine, ImageTask)
        # Only its shard and the validation rows it evaluates on: about 1/8 of the training images.
        assert len(mine.train_x) == len(np.union1d(shared.shards.indices[node], shared.shards.val_indices[:300]))
        assert len(mine.train_x) < len(shared.train_x) / 6 and mine.train_x.dtype == torch.uint8
        assert len(mine.data.test_x) == len(shared.data.test_x)  # every test image: the last round uses all
        for round_ in (0, 1, 57):  # 57: past the first epoch, a new permutation
            a, b = shared._node_batch(node, round_), mine._node_batch(node, round_)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
            assert torch.equal(shared.node_loss_grad(node, x, round_)[1], mine.node_loss_grad(node, x, round_)[1])
        for split in ("test", "val"):
            assert torch.equal(shared.accuracy(x.unsqueeze(0), split, 300), mine.accuracy(x.unsqueeze(0), split, 300))
        assert torch.equal(shared.accuracy(x.unsqueeze(0), "test", 0), mine.accuracy(x.unsqueeze(0), "test", 0))
    assert rounds_per_epoch(settings, 8) == shared.rounds_per_epoch


def test_evaluation_uses_the_subset_during_training_and_everything_at_the_end(monkeypatch: pytest.MonkeyPatch
                                                                              ) -> None:
    settings = RunSettings(dataset="fashion-mnist", model="mlp", nodes=2, val_fraction=0.05, eval_samples=300)
    task = make_task(settings, 2)
    assert isinstance(task, ImageTask)
    limits: list[tuple[str, int]] = []
    monkeypatch.setattr(task, "accuracy", lambda X, split, limit, batched: limits.append((split, limit))
                        or torch.zeros(X.shape[0]))
    X = task.initial_params().repeat(2, 1)
    task.evaluate(X)
    task.evaluate(X, final=True)
    assert limits == [("test", 300), ("val", 300), ("test", 0), ("val", 0)]
