"""Compressed gossip in the simulator: tracking stays exact, DSGDm keeps its bias, crashes roll back, and one node's
``(P,)`` steps equal the simulator's row (the contract the daemon relies on)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from peernet.cli.simulate_cmd import simulate
from peernet.config import LATER_KEYS, RunSettings
from peernet.core.algorithms import HyperParams, get_algorithm
from peernet.core.compressed_gossip import (
    Exchange,
    NodeCompressedGossip,
    StackedCompressedGossip,
    consensus_step,
)
from peernet.core.compressors import COMPRESSORS, Compressed, make_compressor
from peernet.core.topology import generate
from peernet.errors import ConfigError, RoundAbandoned
from peernet.node.results import final_params
from peernet.rundir import settings_digest
from peernet.sim.engine import Simulator
from peernet.sim.protocol import run_protocol
from peernet.sim.run import compression_of, run_simulation
from peernet.tasks import QuadraticTask
from peernet.wire.compressed import compressed_layout
from peernet.wire.messages import TensorSpec

# dim 12: lowrank sends the vector as a 3 × 4 matrix of rank 1, so every compressor really compresses.
RING8 = RunSettings(algorithm="momentum-tracking", topology="ring", nodes=8, dataset="quadratic", heterogeneity=3.0,
                    dim=12, lr=0.05, seed=0)
RATIO_OR_RANK = {"topk": {"compression_ratio": 0.2}, "randk": {"compression_ratio": 0.2},
                 "lowrank": {"compression_rank": 1}}


def _simulator(settings: RunSettings, *, mode: str = "vectorized", track_flows: bool | None = False) -> Simulator:
    task = QuadraticTask(settings, settings.nodes)
    hp = HyperParams(lr=settings.step_size, beta=settings.beta, weight_decay=settings.weight_decay)
    return Simulator(task, generate(settings.topology, settings.nodes), get_algorithm(settings.algorithm), hp,
                     mode=mode, threads=1, track_flows=track_flows, compression=compression_of(settings, task))


def _compressed(settings: RunSettings, compressor: str) -> RunSettings:
    return dataclasses.replace(settings, compression=compressor, **RATIO_OR_RANK.get(compressor, {}))


@pytest.mark.parametrize("algorithm", ["momentum-tracking", "gradient-tracking"])
def test_tracker_sum_stays_exact_every_round_with_every_compressor(algorithm: str) -> None:
    for compressor in COMPRESSORS[1:]:
        plain = _simulator(dataclasses.replace(RING8, algorithm=algorithm))
        sim = _simulator(_compressed(dataclasses.replace(RING8, algorithm=algorithm), compressor))
        worst, apart = 0.0, 0.0
        for _ in range(150):
            sim.step()
            plain.step()
            worst = max(worst, float(sim.node_state("c").sum(dim=0).abs().max()))
            apart = max(apart, float((sim.X - plain.X).abs().max()))
        assert worst <= 1e-12, compressor
        assert apart > 1e-4, compressor  # the compression did act


def _distance(settings: RunSettings, rounds: int) -> float:
    sim = _simulator(settings)
    for _ in range(rounds):
        sim.step()
    return sim.task.problem.distance_to_optimum(sim.X)  # type: ignore[attr-defined]


def test_momentum_tracking_with_top10_reaches_the_optimum_and_dsgdm_keeps_its_bias() -> None:
    top10 = dataclasses.replace(RING8, dim=20, compression="topk", compression_ratio=0.1, consensus_step=0.4)
    tracking = _distance(top10, 2500)
    biased = _distance(dataclasses.replace(top10, algorithm="dsgdm"), 2500)
    print(f"top-10%: momentum tracking {tracking:.3g}, dsgdm {biased:.3g}")
    assert tracking <= 1e-6
    assert biased >= 0.1


def _crash(settings: RunSettings, rollback: bool) -> tuple[float, float]:
    """Node 3 leaves for good after 300 rounds; the survivors' distance to their own optimum after 1,000 and the
    norm of their trackers' sum."""
    sim = _simulator(settings, track_flows=True)
    for r in range(1000):
        if r == 300:
            sim.crash(3, rollback=rollback)
        sim.step()
        if r in (299, 999) and rollback:
            assert sim.flows is not None  # the flows are the trackers, edge by edge, with compression too
            torch.testing.assert_close(sim.flows.node_sum(8), sim.node_state("c"), rtol=0, atol=1e-10)
    survivors = [i for i in range(8) if i != 3]
    problem = sim.task.problem  # type: ignore[attr-defined]
    target = problem.optimum_of(survivors, settings.weight_decay)
    return (problem.distance_to_optimum(sim.X, survivors, target),
            float(torch.linalg.vector_norm(sim.node_state("c")[survivors].sum(dim=0))))


def test_survivors_of_a_crash_reach_their_own_optimum_with_compression() -> None:
    # The exponential graph stays well connected without node 3 (a ring becomes a path, which mixes slowly).
    settings = dataclasses.replace(RING8, topology="exponential", dim=20, heterogeneity=1.0, compression="topk",
                                   compression_ratio=0.2)
    distance, tracker_sum = _crash(settings, rollback=True)
    biased, biased_sum = _crash(settings, rollback=False)
    print(f"survivors' distance: rollback {distance:.3g}, none {biased:.3g}; tracker sums {tracker_sum:.3g}, "
          f"{biased_sum:.3g}")
    assert distance <= 1e-6 and tracker_sum <= 1e-9
    assert biased >= 1e-2 and biased_sum >= 1e-2  # the departed node's share, which the rollback takes back


Received = tuple[dict[int, dict[str, Compressed]], Mapping[int, float]]


def _exchange_for(i: int, posted: list[dict[str, Compressed]], neighbours: Mapping[int, float],
                  barrier: threading.Barrier) -> Exchange:
    def exchange(messages: dict[str, Compressed]) -> Received:
        posted[i] = messages
        barrier.wait()
        got = {j: posted[j] for j in neighbours}
        barrier.wait()  # nobody posts the next round's messages while a neighbour still reads these
        return got, neighbours
    return exchange


def _per_node_run(settings: RunSettings, rounds: int) -> torch.Tensor:
    """Every node on its own ``(P,)`` tensors in a thread of its own, as daemons: NodeCompressedGossip around an
    exchange of messages, mixed with mix_one."""
    n, task, topo = settings.nodes, QuadraticTask(settings, settings.nodes), generate("ring", settings.nodes)
    algorithm = get_algorithm(settings.algorithm)
    hp = HyperParams(lr=settings.step_size, beta=settings.beta, weight_decay=settings.weight_decay)
    nodes = []
    for i in range(n):
        compressor = make_compressor(settings.compression, ratio=settings.compression_ratio,
                                     rank=settings.compression_rank, seed=settings.seed)
        nodes.append(NodeCompressedGossip(i, compressor, consensus_step(compressor, task.dim, None)))
    weights = [{topo.index_of(j): topo.weight(topo.ids[i], j) for j in topo.neighbours(topo.ids[i])} for i in range(n)]
    posted: list[dict[str, Compressed]] = [{} for _ in range(n)]
    barrier = threading.Barrier(n, timeout=60)
    X = task.initial_params().unsqueeze(0).repeat(n, 1)
    states = [algorithm.init_state(X[i]) for i in range(n)]
    with ThreadPoolExecutor(max_workers=n) as pool:
        for r in range(rounds):
            grads = [task.node_loss_grad(i, X[i], r)[1] for i in range(n)]
            futures = [pool.submit(algorithm.step, X[i].clone(), states[i], grads[i], hp,
                                   nodes[i].gossip(_exchange_for(i, posted, weights[i], barrier), r))
                       for i in range(n)]
            X = torch.stack([f.result() for f in futures])
    return X


@pytest.mark.parametrize("compressor", ["bf16", "topk", "randk", "lowrank"])
def test_a_node_on_its_own_tensors_equals_the_simulator_row(compressor: str) -> None:
    settings = _compressed(RING8, compressor)
    sim = _simulator(settings, mode="loop")  # per-node gradients, as a daemon computes them
    for _ in range(40):
        sim.step()
    assert float((_per_node_run(settings, 40) - sim.X).abs().max()) <= 1e-12


def test_an_abandoned_round_changes_no_public_copy() -> None:
    node = NodeCompressedGossip(0, make_compressor("lowrank", rank=1, seed=0), 0.5)
    other = NodeCompressedGossip(1, make_compressor("lowrank", rank=1, seed=0), 0.5)
    v = torch.arange(12, dtype=torch.float64)

    def exchange(messages: dict[str, Compressed]) -> Received:
        return {1: other.prepare({"x": -v}, 0).messages}, {1: 0.5}

    def abandon(messages: dict[str, Compressed]) -> Received:
        raise RoundAbandoned("stop")

    with pytest.raises(RoundAbandoned):
        node.gossip(abandon, 0)(x=v)
    assert node.own == {} and node.copies == {} and node.warm == {}
    first = node.gossip(exchange, 0)(x=v)["x"]
    fresh = NodeCompressedGossip(0, make_compressor("lowrank", rank=1, seed=0), 0.5)
    assert torch.equal(first, fresh.gossip(exchange, 0)(x=v)["x"])  # as if the abandoned try never happened
    assert set(node.own) == {"x"} and set(node.copies) == {1} and set(node.warm) == {"x"}


def test_default_consensus_steps_follow_the_fraction_sent() -> None:
    assert consensus_step(make_compressor("bf16"), 100, None) == 1.0
    assert consensus_step(make_compressor("topk", ratio=0.1), 100, None) == pytest.approx(1 - 0.9**3)
    assert consensus_step(make_compressor("randk", ratio=0.1), 100, None) == pytest.approx(0.05)
    assert consensus_step(make_compressor("lowrank", rank=1), 100, None) == pytest.approx(0.2)  # 10 × 10: 20 of 100
    assert consensus_step(make_compressor("lowrank", rank=1), 13, None) == 1.0  # nothing to compress
    assert consensus_step(make_compressor("topk"), 100, 0.7) == 0.7


def test_stacked_gossip_mixes_like_plain_gossip_without_loss() -> None:
    """With ``none`` and γ = 1 the public copies are the values themselves and the mix is plain mixing."""
    from peernet.core.mixing import SparseMixing

    mixing = SparseMixing.of(generate("ring", 8))
    v = torch.randn(8, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gossip = StackedCompressedGossip(make_compressor("none"), 1.0)
    mixed, copies = gossip.exchange({"x": v}, 0, mixing.mix)
    assert torch.equal(copies["x"], v)
    assert float((mixed["x"] - mixing.mix(v)).abs().max()) <= 1e-15
    assert gossip.bytes_sent == 8 * 12 * 8


def test_settings_validate_and_keep_old_fingerprints() -> None:
    for key, value in (("compression_ratio", 0.1), ("compression_rank", 2), ("consensus_step", 0.5)):
        with pytest.raises(ConfigError, match=f"key '{key}': applies only with compression"):
            RunSettings(**{key: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="key 'compression_rank': applies only with compression = lowrank"):
        RunSettings(compression="topk", compression_rank=2)
    with pytest.raises(ConfigError, match="key 'consensus_step': must be > 0 and <= 1"):
        RunSettings(compression="topk", consensus_step=1.5)
    with pytest.raises(ConfigError, match="key 'compression_ratio': must be"):
        RunSettings(compression="topk", compression_ratio=0.0)
    with pytest.raises(ConfigError, match="key 'compression': cannot be combined with clip_tau"):
        RunSettings(compression="fp16", clip_tau=1.0)
    # Runs and results from before compression existed keep their fingerprint and digest.
    data = dataclasses.asdict(RunSettings())
    data.pop("data_dir")
    for key in LATER_KEYS:
        data.pop(key)
    assert RunSettings().fingerprint() == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    base = RunSettings(dataset="quadratic")
    for changed in (dataclasses.replace(base, compression="topk"),
                    dataclasses.replace(base, compression="topk", compression_ratio=0.2),
                    dataclasses.replace(base, compression="topk", consensus_step=0.3)):
        assert changed.fingerprint() != base.fingerprint()
        assert settings_digest(changed) != settings_digest(base)


def test_simulate_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(simulate, ["--dataset", "quadratic", "--dim", "12", "--rounds", "20", "--compression",
                                           "lowrank", "--compression-rank", "1", "--quiet", "--json",
                                           "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["message_bytes_per_node"] == 2 * (3 + 4) * 8  # x and d, each a rank-1 factor pair
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert settings["compression"] == "lowrank" and settings["compression_rank"] == 1
    plain = run_simulation(dataclasses.replace(RING8, rounds=5), progress=False)
    assert plain["message_bytes_per_node"] == 2 * RING8.dim * 8  # uncompressed: x and d themselves, float64


# Protocol mode: the daemons themselves (exchange, wire, edge epochs), compressing their messages.
PROTOCOL6 = dataclasses.replace(RING8, nodes=6, rounds=120, seed=3)


def _summaries(out: Path, ids: list[int]) -> dict[int, dict[str, Any]]:
    return {i: json.loads((out / "nodes" / f"node{i}" / "summary.json").read_text()) for i in ids}


@pytest.mark.parametrize("compressor", ["topk", "lowrank"])
def test_protocol_mode_daemons_equal_the_simulator_with_compression(tmp_path: Path, compressor: str) -> None:
    """Every edge starts with one full message (its public copy after the round's change), which leaves the copies
    exactly where the compressed one would; from then on the daemons send the simulator's messages, bit for bit."""
    settings = _compressed(PROTOCOL6, compressor)
    summary = run_protocol(settings, tmp_path / "p", progress=False)
    run_simulation(settings, tmp_path / "s", progress=False)
    x_sim = torch.load(tmp_path / "s" / "final_params.pt", weights_only=True)["params"]
    ids = list(range(6))
    assert torch.equal(final_params({i: tmp_path / "p" / "nodes" / f"node{i}" for i in ids}), x_sim)
    assert summary["virtual_seconds"] < 1.0  # nobody waited for a deadline
    ends = _summaries(tmp_path / "p", ids)
    assert all(e["resyncs_sent"] == 2 and e["resyncs_received"] == 2 and e["broken_chains"] == {}
               for e in ends.values())  # one full message per edge and direction, at the start
    per_round = sum(spec.nbytes for spec in _compressed_specs(settings).values())
    full = 2 * settings.dim * 8  # x and d in float64
    # Every message after the first is compressed: a round's bytes are the compressed layout's (plus headers).
    assert ends[0]["bytes_out"] < 2 * (full + (settings.rounds - 1) * per_round) + 2 * settings.rounds * 400


def _compressed_specs(settings: RunSettings) -> dict[str, TensorSpec]:
    compressor = make_compressor(settings.compression, ratio=settings.compression_ratio,
                                 rank=settings.compression_rank, seed=settings.seed)
    return compressed_layout(compressor, {n: TensorSpec(n, "float64", (settings.dim,)) for n in ("x", "d")})


def test_lost_duplicated_and_reordered_compressed_messages_keep_the_tracker_sum(tmp_path: Path) -> None:
    """A lost message breaks the receiver's chain of copies: the edge is dropped (its flows rolled back at both
    ends) and starts over with a full message, so the trackers still sum to zero."""
    # A seed whose faults spare the last round: a message lost there, from a neighbour that then says bye, leaves
    # a one-sided flow that no later round rolls back, with or without compression (docs/node.md).
    faults = {"seed": 3, "drop": 0.05, "duplicate": 0.1, "reorder": 0.1}
    summary = run_protocol(_compressed(PROTOCOL6, "topk"), tmp_path, node_options={"faults": faults},
                           progress=False)
    ends = _summaries(tmp_path, list(range(6)))
    assert sum(e["rollbacks"] for e in ends.values()) > 0
    assert sum(sum(e["broken_chains"].values()) for e in ends.values()) > 0  # the resync path did run
    assert sum(e["resyncs_received"] for e in ends.values()) > 12  # more than the 12 of the start
    assert summary["tracker_sum_error"] <= 1e-9


def test_a_healed_partition_resynchronises_the_copies_and_the_run_converges(tmp_path: Path) -> None:
    """Node 2 is cut off for ten rounds (and messages are duplicated and reordered throughout): its edges drop,
    restart with one full exchange, and the whole network reaches the optimum with compressed messages."""
    settings = dataclasses.replace(RING8, topology="exponential", nodes=6, dim=20, heterogeneity=1.0, lr=0.1,
                                   beta=0.5, rounds=200, compression="topk", compression_ratio=0.2)
    faults = {"seed": 5, "duplicate": 0.1, "reorder": 0.1,
              "partitions": [{"groups": [[2]], "from_round": 20, "to_round": 30}]}
    summary = run_protocol(settings, tmp_path, node_options={"faults": faults}, progress=False)
    ends = _summaries(tmp_path, list(range(6)))
    assert sum(e["resyncs_received"] for e in ends.values()) > 24  # the 24 edge ends of the start, and more
    assert sum(e["timeouts"].get("2", 0) for e in ends.values()) > 0
    assert summary["distance_to_optimum"] <= 1e-6 and summary["tracker_sum_error"] <= 1e-9
