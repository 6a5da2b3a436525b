"""The parallel, node-stacked simulator equals the one-thread per-node loop it replaced."""

from __future__ import annotations

import pytest
import torch

from peernet.config import RunSettings
from peernet.core.algorithms import ALGORITHMS, HyperParams, get_algorithm
from peernet.core.topology import generate
from peernet.sim.engine import Simulator, choose_mixing, choose_mode
from peernet.tasks import ImageTask, QuadraticTask
from tests.sim.reference import one_thread_loop


@pytest.fixture(scope="module")
def lenet32() -> ImageTask:
    s = RunSettings(dataset="fashion-mnist", model="lenet", nodes=8, batch_size=32, seed=5)
    return ImageTask(s, 8)


def _run(sim: Simulator, rounds: int) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        losses = torch.stack([sim.step() for _ in range(rounds)])
    finally:
        sim.close()
    return sim.X, losses


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_parallel_loop_equals_the_one_thread_loop_on_lenet_float32(lenet32: ImageTask, algorithm: str) -> None:
    topo, hp = generate("ring", 8), HyperParams(lr=0.02, beta=0.9)
    ref_x, ref_loss = one_thread_loop(lenet32, topo, get_algorithm(algorithm), hp, 50)
    sim = Simulator(lenet32, topo, get_algorithm(algorithm), hp, mode="loop", threads=2)
    x, loss = _run(sim, 50)
    assert x.dtype == torch.float32
    assert float((x - ref_x).abs().max()) <= 1e-6
    assert float((loss - ref_loss).abs().max()) <= 1e-6
    assert float((x - lenet32.initial_params()).abs().max()) > 1e-2  # 50 rounds really trained


@pytest.mark.parametrize("kind", ["ring", "exponential", "random"])
@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_parallel_loop_equals_the_one_thread_loop_exactly_on_the_quadratic(algorithm: str, kind: str) -> None:
    s = RunSettings(dataset="quadratic", nodes=12, heterogeneity=2.0, seed=1)
    task, topo, hp = QuadraticTask(s, 12), generate(kind, 12, seed=1), HyperParams(lr=0.05, beta=0.9)
    ref_x, ref_loss = one_thread_loop(task, topo, get_algorithm(algorithm), hp, 60)
    for threads in (1, 2):
        x, loss = _run(Simulator(task, topo, get_algorithm(algorithm), hp, mode="loop", threads=threads), 60)
        assert torch.equal(x, ref_x), f"{threads} thread(s): max diff {float((x - ref_x).abs().max())}"
        assert torch.equal(loss, ref_loss)


def test_auto_mode_is_per_node_for_image_models_on_cpu_and_batched_otherwise(lenet32: ImageTask) -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    quad = QuadraticTask(RunSettings(dataset="quadratic", nodes=4), 4)
    assert choose_mode("auto", lenet32, cpu) == "loop"
    assert choose_mode("auto", quad, cpu) == "vectorized"
    assert choose_mode("auto", lenet32, gpu) == "vectorized"
    assert choose_mode("vectorized", lenet32, cpu) == "vectorized"  # forcing a mode still works
    mlp = ImageTask(RunSettings(model="mlp", nodes=4), 4)
    assert choose_mode("auto", mlp, cpu) == "loop"


def test_auto_mixing_is_the_daemons_arithmetic_up_to_32_nodes_on_cpu() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert choose_mixing("auto", 32, cpu) == "exact"
    assert choose_mixing("auto", 33, cpu) == "csr"
    assert choose_mixing("auto", 8, gpu) == "csr"
    assert choose_mixing("exact", 4096, cpu) == "exact"


def test_a_1024_node_quadratic_reaches_the_optimum_with_momentum_tracking_on_an_exponential_graph() -> None:
    s = RunSettings(dataset="quadratic", nodes=1024, heterogeneity=1.0, topology="exponential")
    task = QuadraticTask(s, 1024)
    sim = Simulator(task, generate("exponential", 1024), get_algorithm("momentum-tracking"),
                    HyperParams(lr=s.step_size), track_flows=False)
    try:
        for _ in range(600):
            sim.step()
    finally:
        sim.close()
    distance = task.problem.distance_to_optimum(sim.X)
    print(f"1024 nodes, 600 rounds: distance to optimum {distance:.3g}")
    assert distance <= 1e-8
