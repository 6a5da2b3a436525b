"""Random-crop augmentation: correct crops, a pure function of (seed, node, round), equal everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from peernet.config import RunSettings
from peernet.data.augment import crop_offsets, crop_padding, random_crop
from peernet.node.results import final_params
from peernet.sim.protocol import run_protocol
from peernet.sim.run import run_simulation
from peernet.tasks import ImageTask, make_task


def test_each_sample_is_cut_at_its_own_offset() -> None:
    images = torch.arange(2 * 3 * 6 * 5, dtype=torch.float32).reshape(2, 3, 6, 5)
    offsets = torch.tensor([[0, 4], [2, 1]])
    out = random_crop(images, offsets, pad=2)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for b, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(out[b], padded[b, :, dy:dy + 6, dx:dx + 5])


def test_offsets_depend_on_seed_node_and_round_only() -> None:
    a = crop_offsets(0, 3, 7, 100, 2)
    assert np.array_equal(a, crop_offsets(0, 3, 7, 100, 2)) and a.min() >= 0 and a.max() <= 4
    assert not np.array_equal(a, crop_offsets(0, 3, 8, 100, 2))
    assert not np.array_equal(a, crop_offsets(0, 4, 7, 100, 2))
    assert crop_padding(28) == 3 and crop_padding(32) == 4


def test_per_node_and_batched_paths_see_the_same_augmented_batches() -> None:
    settings = RunSettings(dataset="fashion-mnist", model="mlp", nodes=4, batch_size=16, augment="crop")
    task = make_task(settings, 4)
    assert isinstance(task, ImageTask)
    X = task.initial_params().repeat(4, 1)
    single = torch.stack([torch.tensor(task.node_loss_grad(i, X[i], 5)[0]) for i in range(4)])
    grads = torch.empty_like(X)
    losses = torch.empty(4, dtype=X.dtype)
    task.loss_grad_into(range(4), X, 5, grads, losses, batched=True)
    assert torch.allclose(losses, single.to(losses.dtype), rtol=1e-5)
    plain = make_task(RunSettings(dataset="fashion-mnist", model="mlp", nodes=4, batch_size=16), 4)
    assert not torch.equal(task._node_batch(0, 5)[0], plain._node_batch(0, 5)[0])  # it does augment


def test_daemons_train_on_the_same_crops_as_the_simulator(tmp_path: Path) -> None:
    settings = RunSettings(dataset="fashion-mnist", model="mlp", nodes=4, topology="ring", batch_size=16,
                           rounds=12, augment="crop", eval_samples=200)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each daemon has: the same float32 summation order
    try:
        run_simulation(settings, tmp_path / "sim", mode="loop", progress=False, threads=1)
        run_protocol(settings, tmp_path / "daemons", progress=False)
    finally:
        torch.set_num_threads(threads)
    x_sim = torch.load(tmp_path / "sim" / "final_params.pt", weights_only=True)["params"]
    x_daemons = final_params({i: tmp_path / "daemons" / "nodes" / f"node{i}" for i in range(4)})
    assert float((x_sim - x_daemons).abs().max()) <= 1e-6
