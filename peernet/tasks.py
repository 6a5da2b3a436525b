"""Training tasks over flat parameter vectors: per-node and node-batched losses, gradients and evaluation.

A task hides the data and the model from the algorithms: it maps parameters ``(P,)`` or node-stacked
``(N, P)`` to losses and gradients for a given round. Batches are a pure function of (seed, node,
round), so the vectorised simulator, the per-node loop and the daemon all see the same samples, and a
resumed run needs no saved RNG state.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F

from peernet.config import RunSettings
from peernet.core.compressed_gossip import consensus_step
from peernet.core.compressors import Compressor, make_compressor
from peernet.data.augment import crop_offsets, crop_padding, random_crop
from peernet.data.quadratic import QuadraticProblem, make_quadratic
from peernet.models import build_model
from peernet.models.flat import ParamLayout
from peernet.models.stacked import stacked_forward

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class Task(Protocol):
    """What the simulator and the daemon need from a training problem."""

    nodes: int
    dim: int
    dtype: torch.dtype
    device: torch.device
    rounds_per_epoch: int
    #: Whether one batched call over nodes beats node-by-node calls on a CPU (the simulator's ``auto`` mode).
    batched_on_cpu: bool

    def initial_params(self) -> torch.Tensor: ...

    def to_device(self, device: torch.device) -> None: ...

    def loss_grad_into(self, nodes: range, X: Rows, round_: int, grads: Rows, losses: torch.Tensor, *,
                       batched: bool) -> None: ...

    def node_loss_grad(self, node: int, x: torch.Tensor, round_: int) -> tuple[float, torch.Tensor]: ...

    def evaluate(self, X: torch.Tensor, run: Runner | None = None, *, batched: bool = True, final: bool = False
                 ) -> dict[str, Any]: ...


class Rows(Protocol):
    """Node-stacked parameters or gradients indexed by node (a tensor, or the simulator's block storage)."""

    def __getitem__(self, key: int | slice) -> torch.Tensor: ...

    def __setitem__(self, key: int | slice, value: torch.Tensor) -> None: ...


Runner = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]
"""``run(fn, items)`` returns ``[fn(x) for x in items]``, possibly computed on worker threads."""


def _serial(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    return [fn(x) for x in items]


class QuadraticTask:
    """Heterogeneous least squares with exact gradients (``batch_size`` does not apply)."""

    rounds_per_epoch = 1
    batched_on_cpu = True  # an einsum over all nodes; node by node it would be pure Python overhead

    def __init__(self, settings: RunSettings, nodes: int) -> None:
        self.nodes = nodes
        self.device = torch.device("cpu")
        self.settings = settings
        self.problem: QuadraticProblem = make_quadratic(
            nodes, dim=settings.dim, heterogeneity=settings.heterogeneity,
            weight_decay=settings.weight_decay, seed=settings.seed)
        self.dim = self.problem.dim
        self.dtype = _DTYPES[settings.param_dtype]

    def initial_params(self) -> torch.Tensor:
        return torch.zeros(self.dim, dtype=self.dtype, device=self.device)

    def to_device(self, device: torch.device) -> None:
        """Keep the problem's matrices on ``device``."""
        self.device = device
        p = self.problem
        self.problem = dataclasses.replace(p, A=p.A.to(device), b=p.b.to(device), optimum=p.optimum.to(device))

    def node_loss_grad(self, node: int, x: torch.Tensor, round_: int) -> tuple[float, torch.Tensor]:
        losses, grads = self.problem.losses_and_grads(x.unsqueeze(0), [node])
        return float(losses[0]), grads[0].to(self.dtype)

    def loss_grad_into(self, nodes: range, X: Rows, round_: int, grads: Rows, losses: torch.Tensor, *,
                       batched: bool) -> None:
        """Exact losses and gradients of ``nodes`` into rows of ``grads`` and ``losses``."""
        if batched:
            loss, grad = self.problem.losses_and_grads(X[nodes.start:nodes.stop], list(nodes))
            grads[nodes.start:nodes.stop] = grad
            losses[nodes.start:nodes.stop] = loss
            return
        for i in nodes:
            loss_i, grad = self.node_loss_grad(i, X[i], round_)
            grads[i] = grad
            losses[i] = loss_i

    def evaluate(self, X: torch.Tensor, run: Runner | None = None, *, batched: bool = True, final: bool = False
                 ) -> dict[str, Any]:
        losses, _ = self.problem.losses_and_grads(X)
        mean_x = X.mean(dim=0, keepdim=True)
        avg_loss, _ = self.problem.losses_and_grads(mean_x.expand_as(X))
        return {
            "distance_to_optimum": self.problem.distance_to_optimum(X),
            "node_loss": [float(v) for v in losses],
            "averaged_model_loss": float(avg_loss.mean()),
        }


@dataclass(frozen=True)
class Shards:
    """Each node's training indices into the dataset's training tensors."""

    indices: tuple[np.ndarray, ...]
    val_indices: np.ndarray


class BatchSampler:
    """Deterministic per-node mini-batches: epoch e of node i is a permutation seeded by (seed, i, e)."""

    def __init__(self, shard: np.ndarray, batch_size: int, seed: int, node: int) -> None:
        self.shard = shard
        self.batch_size = batch_size
        self.seed = seed
        self.node = node
        # A shard smaller than one batch wraps around so every node draws equal-sized batches.
        self.batches_per_epoch = max(1, len(shard) // batch_size)
        self._epoch = -1
        self._perm = shard

    def batch(self, round_: int) -> np.ndarray:
        epoch, j = divmod(round_, self.batches_per_epoch)
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, self.node, epoch, 0xBA7C])
            self._perm = self.shard[rng.permutation(len(self.shard))]
            self._epoch = epoch
        pos = (j * self.batch_size + np.arange(self.batch_size)) % len(self._perm)
        return self._perm[pos]


class _Replica:
    """One thread's own copy of the model, its parameters views into one flat buffer (no per-call unflatten).

    ``functional_call`` swaps a module's parameters while it runs, so two threads must never share a
    module; each worker thread gets a replica the first time it computes a gradient.
    """

    def __init__(self, model: torch.nn.Module, layout: ParamLayout) -> None:
        self.model = copy.deepcopy(model)
        self.flat = layout.flatten(self.model).to(next(self.model.parameters()).device)
        views = layout.unflatten(self.flat)
        named = dict(self.model.named_parameters())
        self.params = [named[name] for name in layout.names]
        with torch.no_grad():
            for name, p in zip(layout.names, self.params, strict=True):
                p.data = views[name]
        self.vmapped: Any = None
        self.grad = torch.empty_like(self.flat)  # this thread's gradient buffer

    def loss_grad(self, x: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, out: torch.Tensor) -> float:
        """Load ``x``, compute the mean cross-entropy on the batch and write its gradient into ``out``."""
        with torch.no_grad():
            self.flat.copy_(x)
        loss = F.cross_entropy(self.model(xb), yb)
        grads = torch.autograd.grad(loss, self.params)
        torch.cat([g.reshape(-1) for g in grads], out=out)
        return float(loss.detach())


def image_shards(settings: RunSettings, nodes: int, labels: np.ndarray, num_classes: int = 10) -> Shards:
    """Each node's training indices and the validation indices, from the labels alone (no image is read)."""
    from peernet.data.partition import partition_with_validation

    parts, val_idx = partition_with_validation(
        labels, nodes, settings.partition, seed=settings.seed, val_fraction=settings.val_fraction,
        classes_per_node=settings.classes_per_node, alpha=settings.alpha, num_classes=num_classes)
    return Shards(tuple(parts), val_idx)


def rounds_per_epoch(settings: RunSettings, nodes: int) -> int:
    """Rounds in one epoch of a run (batches in the mean shard), without building the task or reading images."""
    if settings.dataset == "quadratic":
        return QuadraticTask.rounds_per_epoch
    from peernet.data.datasets import load_labels

    shards = image_shards(settings, nodes, load_labels(settings.dataset, settings.data_dir)[0])
    return _rounds_per_epoch(shards, settings.batch_size)


def _rounds_per_epoch(shards: Shards, batch_size: int) -> int:
    mean_shard = int(np.mean([len(s) for s in shards.indices]))
    return max(1, mean_shard // batch_size)


class ImageTask:
    """An image classifier trained on per-node shards of a labelled dataset.

    Images stay uint8 and are normalised per batch. With ``node`` (a daemon) the task reads and keeps only
    that node's shard and the evaluation rows it uses; the samplers give indices into the whole training
    set, which ``_rows`` maps to the rows kept. Without it (the simulator) every node shares one copy.
    """

    def __init__(self, settings: RunSettings, nodes: int, node: int | None = None) -> None:
        from peernet.data.datasets import load_dataset, load_labels

        self.settings = settings
        self.nodes = nodes
        # Measured: 8 LeNet nodes 26 vs 41 ms a round, 64 MLP nodes 106 vs 148 ms (docs/algorithms.md).
        self.batched_on_cpu = False
        self.dtype = _DTYPES[settings.param_dtype]
        labels = load_labels(settings.dataset, settings.data_dir)[0]
        self.shards = image_shards(settings, nodes, labels)
        self.samplers = [BatchSampler(s, settings.batch_size, settings.seed, i)
                         for i, s in enumerate(self.shards.indices)]
        self.rounds_per_epoch = _rounds_per_epoch(self.shards, settings.batch_size)
        limit = settings.eval_samples or None
        # The simulator evaluates all validation rows at the end; a daemon only ever the first eval_samples.
        val = self.shards.val_indices if node is None else self.shards.val_indices[:limit]
        # Rows of the training set this task holds: all of them, or one node's shard and the validation rows.
        self._rows = None if node is None else np.union1d(self.shards.indices[node], val)
        if self._rows is None:
            self.data = load_dataset(settings.dataset, settings.data_dir)
        else:
            # Every test image: the last round is evaluated on all of them (7.8 MB for Fashion-MNIST).
            self.data = load_dataset(settings.dataset, settings.data_dir, train_rows=self._rows)
        self._val = self._local(val)
        torch.manual_seed(settings.seed)
        self.model = build_model(settings.model, self.data.input_shape, self.data.num_classes).to(self.dtype)
        self.layout = ParamLayout.of(self.model)
        self.dim = self.layout.numel
        self.device = torch.device("cpu")
        self.train_x = self.data.train_x  # uint8: normalised batch by batch (``_images``)
        self.train_y = self.data.train_y
        self._init = self.layout.flatten(self.model)
        self._stacked = stacked_forward(self.model)
        self._local_threads = threading.local()

    def _local(self, idx: np.ndarray) -> np.ndarray:
        """Indices into the whole training set → indices into the rows this task holds."""
        return idx if self._rows is None else np.searchsorted(self._rows, idx)

    def _images(self, x_u8: torch.Tensor) -> torch.Tensor:
        return self.data.normalise(x_u8, self.dtype)

    def initial_params(self) -> torch.Tensor:
        return self._init.clone().to(self.device)

    def to_device(self, device: torch.device) -> None:
        """Keep the model's data on ``device`` (a daemon or simulator on a GPU); parameters are passed per call."""
        self.device = device
        self.model.to(device)
        self.train_x = self.train_x.to(device)
        self.train_y = self.data.train_y.to(device)
        self._local_threads = threading.local()

    def _replica(self) -> _Replica:
        replica = getattr(self._local_threads, "replica", None)
        if replica is None:
            replica = self._local_threads.replica = _Replica(self.model, self.layout)
        return replica

    def _node_batch(self, node: int, round_: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(self._local(self.samplers[node].batch(round_))).to(self.device)
        return self._augment(self._images(self.train_x[idx]), node, round_), self.train_y[idx]

    def _augment(self, xb: torch.Tensor, node: int, round_: int) -> torch.Tensor:
        """Node ``node``'s batch of round ``round_``, randomly cropped when the run asks for it (the offsets
        depend on (seed, node, round) only: the same in every mode, in the simulator and in the daemon)."""
        if self.settings.augment == "none":
            return xb
        pad = crop_padding(xb.shape[-2])
        offsets = crop_offsets(self.settings.seed, node, round_, xb.shape[0], pad)
        return random_crop(xb, torch.from_numpy(offsets).to(xb.device), pad)

    def node_loss_grad(self, node: int, x: torch.Tensor, round_: int) -> tuple[float, torch.Tensor]:
        xb, yb = self._node_batch(node, round_)
        out = torch.empty(self.dim, dtype=x.dtype, device=x.device)
        loss = self._replica().loss_grad(x, xb, yb, out)
        return loss, out

    def loss_grad_into(self, nodes: range, X: Rows, round_: int, grads: Rows, losses: torch.Tensor, *,
                       batched: bool) -> None:
        """Losses and gradients of ``nodes`` into their rows: one batched call, or node by node."""
        if not batched:
            replica = self._replica()
            for i in nodes:
                xb, yb = self._node_batch(i, round_)
                losses[i] = replica.loss_grad(X[i], xb, yb, replica.grad)
                grads[i] = replica.grad
            return
        lo, hi = nodes.start, nodes.stop
        idx = torch.from_numpy(self._local(np.stack([self.samplers[i].batch(round_) for i in nodes])))
        idx = idx.to(self.device)
        xb, yb = self._images(self.train_x[idx]), self.train_y[idx]
        if self.settings.augment != "none":
            xb = torch.stack([self._augment(xb[k], i, round_) for k, i in enumerate(nodes)])
        if self._stacked is None:
            replica = self._replica()
            if replica.vmapped is None:
                def loss_fn(p: dict[str, torch.Tensor], xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
                    return F.cross_entropy(functional_call(replica.model, p, (xs,)), ys)
                replica.vmapped = vmap(grad_and_value(loss_fn))
            g, loss = replica.vmapped(self.layout.unflatten(X[lo:hi].detach()), xb, yb)
            grads[lo:hi] = self.layout.grads_to_flat(g, (hi - lo,))
            losses[lo:hi] = loss.detach()
            return
        # A detached view is a leaf of its own: no copy of the parameters is made for autograd.
        leaf = X[lo:hi].detach().requires_grad_(True)
        logits = self._stacked(self.layout.unflatten(leaf), xb)
        n, b = yb.shape
        per_sample = F.cross_entropy(logits.reshape(n * b, -1), yb.reshape(-1), reduction="none")
        node_losses = per_sample.reshape(n, b).mean(1)
        # Node i's loss depends only on row i, so one backward of the sum yields every node's own gradient.
        (flat_grad,) = torch.autograd.grad(node_losses.sum(), leaf)
        grads[lo:hi] = flat_grad
        losses[lo:hi] = node_losses.detach()

    def _eval_split(self, split: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and labels of the split's first ``limit`` samples (all when 0), on the task's device."""
        if split == "test":
            xs, ys = self.data.test_x, self.data.test_y
        else:
            sel = torch.from_numpy(self._val)
            xs, ys = self.data.train_x[sel], self.data.train_y[sel]
        if limit:
            xs, ys = xs[:limit], ys[:limit]
        return xs.to(self.device), ys.to(self.device)

    @torch.no_grad()
    def accuracy(self, X: torch.Tensor, split: str = "test", limit: int = 0, chunk: int = 250,
                 *, batched: bool = True) -> torch.Tensor:
        """Accuracy of each parameter row of ``X (k, P)`` on the test or validation split.

        ``batched`` evaluates the rows in one node-stacked forward; otherwise row by row through this
        thread's plain model replica (faster for convolutions on a CPU, as in training).
        """
        xs, ys = self._eval_split(split, limit)
        if len(ys) == 0:
            return torch.full((X.shape[0],), float("nan"))
        k = X.shape[0]
        forward = self._row_forward() if not batched else self._stacked_forward(X)
        params: Any = X if not batched else self.layout.unflatten(X)
        correct = torch.zeros(k, device=self.device)
        for start in range(0, len(ys), chunk):
            logits = forward(params, self._images(xs[start:start + chunk]))
            correct += (logits.argmax(dim=-1) == ys[start:start + chunk]).sum(dim=-1).float()
        return (correct / len(ys)).cpu()

    def _row_forward(self) -> Callable[[Any, torch.Tensor], torch.Tensor]:
        """Logits of each parameter row in turn, through this thread's plain model replica."""
        replica = self._replica()

        def forward(rows: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
            out = []
            for row in rows:
                replica.flat.copy_(row)
                out.append(replica.model(xb))
            return torch.stack(out)
        return forward

    def _stacked_forward(self, X: torch.Tensor) -> Callable[[Any, torch.Tensor], torch.Tensor]:
        """Logits of all ``k`` parameter rows at once: the node-stacked forward, or vmap where there is none."""
        k, stacked = X.shape[0], self._stacked
        if stacked is not None:
            def forward(p: Any, xb: torch.Tensor) -> torch.Tensor:
                return stacked(p, xb.unsqueeze(0).expand(k, *xb.shape))
            return forward
        model = self._replica().model  # functional_call mutates the module: one per thread
        return vmap(lambda p, xb: functional_call(model, p, (xb,)), in_dims=(0, None))

    def _accuracies(self, X: torch.Tensor, split: str, run: Runner, batched: bool, limit: int) -> torch.Tensor:
        """Accuracy of every row; rows (or groups of 16 when batched) are the items ``run`` spreads over threads."""
        size = 16 if batched else 1
        groups = [X[i:i + size] for i in range(0, X.shape[0], size)]
        return torch.cat(run(lambda rows: self.accuracy(rows, split, limit, batched=batched), groups))

    def evaluate(self, X: torch.Tensor, run: Runner | None = None, *, batched: bool = True, final: bool = False
                 ) -> dict[str, Any]:
        """Test (and validation) accuracy of every row and of their average: on the first ``eval_samples``
        samples, or on all of them when ``final`` (the run's last evaluation)."""
        run = run or _serial
        limit = 0 if final else self.settings.eval_samples
        stacked = torch.cat([X, X.mean(dim=0, keepdim=True)])
        acc = self._accuracies(stacked, "test", run, batched, limit)
        out: dict[str, Any] = {
            "node_test_accuracy": [float(a) for a in acc[:-1]],
            "mean_test_accuracy": float(acc[:-1].mean()),
            "averaged_model_test_accuracy": float(acc[-1]),
        }
        if len(self.shards.val_indices):
            val = self._accuracies(stacked, "val", run, batched, limit)
            out["mean_val_accuracy"] = float(val[:-1].mean())
            out["averaged_model_val_accuracy"] = float(val[-1])
        return out


def make_task(settings: RunSettings, nodes: int, node: int | None = None) -> QuadraticTask | ImageTask:
    """The task for ``settings.dataset`` on ``nodes`` nodes; ``node``: only what that node's daemon needs."""
    if settings.dataset == "quadratic":
        return QuadraticTask(settings, nodes)
    return ImageTask(settings, nodes, node)


def run_compressor(settings: RunSettings, task: Task) -> tuple[Compressor, float] | None:
    """The run's compressor and consensus step γ (None: plain gossip), built alike by the simulator and every daemon
    so that their messages are the same: the run seed, and low rank cut by the model's parameter shapes (the
    quadratic task has none: one matrix)."""
    if settings.compression == "none":
        return None
    layout = getattr(task, "layout", None)
    compressor = make_compressor(settings.compression, ratio=settings.compression_ratio, rank=settings.compression_rank,
                                 seed=settings.seed, shapes=None if layout is None else layout.shapes)
    return compressor, consensus_step(compressor, task.dim, settings.consensus_step)
