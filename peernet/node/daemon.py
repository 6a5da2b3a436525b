"""The node daemon: register, wait for the start signal, train round by round with its neighbours, checkpoint."""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from peernet.bootstrap.client import BootstrapClient, new_incarnation
from peernet.bootstrap.registry import run_fingerprint
from peernet.config import RunSettings, load_run_settings, resolve_topology
from peernet.core.algorithms import HyperParams, get_algorithm
from peernet.core.deadline import AdaptiveDeadline, DeadlinePolicy
from peernet.core.edges import NodeEdges
from peernet.core.topology import GENERATORS
from peernet.device import resolve_device
from peernet.errors import BootstrapUnavailable, TransportError
from peernet.metrics.jsonl import MetricsWriter
from peernet.metrics.memory import peak_rss_mb
from peernet.node.checkpoint import Checkpoint, clear_stale_temp_files, load_checkpoint, save_checkpoint
from peernet.node.config import NodeConfig, rejoin_from_checkpoint
from peernet.node.curve import load_node_keys
from peernet.node.exchange import CatchUp, Exchange, RoundAbandoned
from peernet.node.heartbeat import Heartbeat
from peernet.node.statefiles import read_incarnation, read_table, write_incarnation, write_table
from peernet.security.zap import warn_if_exposed
from peernet.sim.run import eval_interval, total_rounds
from peernet.sim.tasks import ImageTask, QuadraticTask, make_task
from peernet.transport import Transport
from peernet.transport.faults import FaultyTransport
from peernet.transport.zmq_transport import ZmqTransport
from peernet.wire.messages import TensorSpec

log = logging.getLogger("peernet.node")


class NodeDaemon:
    """One node of a run. ``run()`` returns when training is finished or the node was told to stop."""

    def __init__(self, cfg: NodeConfig, *, fresh: bool = False) -> None:
        self.cfg = cfg
        self.fresh = fresh
        self.settings: RunSettings = load_run_settings(cfg.run)
        self.topology = resolve_topology(self.settings)
        self.index = self.topology.index_of(cfg.id)
        self.neighbours = {j: self.topology.weight(cfg.id, j) for j in self.topology.neighbours(cfg.id)}
        self.fingerprint = run_fingerprint(self.settings, self.topology)
        topology_file = None if self.settings.topology in GENERATORS else self.settings.topology
        self.keys = load_node_keys(cfg, self.topology, topology_file=topology_file)
        self.state_dir = Path(cfg.state_dir)
        self.stop_event = threading.Event()
        self.device = resolve_device(cfg.device)

    # -- signals ---------------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("received %s: finishing cleanly (checkpoint, then exit)", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- main ------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        torch.set_num_threads(self.cfg.threads)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        clear_stale_temp_files(self.state_dir)
        task = make_task(self.settings, self.topology.n)
        if isinstance(task, ImageTask):
            task.to_device(self.device)
        algorithm = get_algorithm(self.settings.algorithm)
        hp = HyperParams(lr=self.settings.step_size, beta=self.settings.beta, weight_decay=self.settings.weight_decay)
        rounds = total_rounds(self.settings, task.rounds_per_epoch)
        every = eval_interval(self.settings, rounds)
        edges = NodeEdges(self.neighbours, tracks=algorithm.tracks, rollback=self.cfg.rollback)

        dtype = task.dtype
        x = task.initial_params().to(self.device)
        state = algorithm.init_state(x)
        start_round = 0
        ckpt = None if self.fresh else load_checkpoint(self.state_dir, node_id=self.cfg.id, run=self.fingerprint)
        crashed = False
        if ckpt is not None:
            x = ckpt.params.to(self.device, dtype)
            state = {k: v.to(self.device, dtype) for k, v in ckpt.state.items() if not k.startswith("flow.")}
            start_round = ckpt.round
            crashed = not ckpt.extra.get("clean", False)
            if not crashed:
                edges.load_state_dict(checkpoint_edges(ckpt))
            log.info("resuming from checkpoint at round %d (%s)", start_round,
                     "periodic: the node stopped abruptly and rejoins" if crashed else "written at a clean exit")

        dtype_name = "float64" if dtype == torch.float64 else "float32"
        layout = {name: TensorSpec(name, dtype_name, (task.dim,)) for name in algorithm.sent}
        payload = sum(s.nbytes for s in layout.values())
        keys = self.keys
        if keys is None:
            warn_if_exposed(self.cfg.listen, f"node {self.cfg.id}", "Create keys with `peernet keygen --cluster "
                            "DIR` and set secret_key and bootstrap_public_key_file (docs/node.md, CURVE).")
        transport: Transport = ZmqTransport(self.cfg.id, bind=self.cfg.listen, advertise=self.cfg.advertise,
                                            max_msg_size=2 * payload + (1 << 20),
                                            curve=None if keys is None else keys.transport())
        faulty = None
        if self.cfg.faults is not None:
            faulty = FaultyTransport(transport, self.cfg.faults)
            transport = faulty
            log.warning("fault injection is on: %s", self.cfg.faults)
        client = BootstrapClient(self.cfg.bootstrap, timeout=self.cfg.bootstrap_timeout,
                                 retries=self.cfg.bootstrap_retries, curve=None if keys is None else keys.client())
        incarnation = new_incarnation()
        previous = read_incarnation(self.state_dir)
        write_incarnation(self.state_dir, incarnation)
        policy = DeadlinePolicy(floor=self.cfg.deadline_floor, ceiling=self.cfg.deadline_ceiling,
                                factor=self.cfg.deadline_factor)
        exchange = Exchange(transport, self.cfg.id, self.fingerprint, self.neighbours, layout, edges=edges,
                            deadline=AdaptiveDeadline(policy), tracked="d" if algorithm.tracks else None,
                            max_abs=self.cfg.max_abs or None, should_stop=self.stop_event.is_set)
        heartbeat: Heartbeat | None = None
        metrics = MetricsWriter(self.state_dir / "metrics.jsonl", append=not self.fresh)
        summary: dict[str, Any] = {"node": self.cfg.id, "rounds": rounds, "resumed_from": start_round}
        last_eval: dict[str, Any] = {}
        catchups = 0
        r = start_round
        try:
            log.info("node %d listening on %s; registering with bootstrap %s", self.cfg.id, transport.endpoint,
                     self.cfg.bootstrap)
            table = self._rendezvous(client, transport.endpoint, incarnation, previous, resuming=ckpt is not None)
            if table is None:
                log.info("stopped while waiting for the start signal")
                summary.update({"final_round": r, "finished": False})
                return summary
            missing = sorted(j for j in self.neighbours if j not in table)
            if missing:
                raise TransportError(f"the address table has no entry for neighbours {missing}: cannot connect to them")
            for j in self.neighbours:
                transport.connect(j, table[j]["endpoint"])
            heartbeat = Heartbeat(self.cfg, incarnation, self.stop_event, curve=None if keys is None else keys.client())
            heartbeat.start()
            exchange.hello(start_round, transport.endpoint, reset=crashed)
            if crashed:
                r, x = self._rejoin(exchange, edges, x, state, start_round)
                self._checkpoint(r, x, state, edges, clean=False)  # never older than the interval, even now
            log.info("started: %d rounds, neighbours %s, device %s, %s", rounds, sorted(self.neighbours), self.device,
                     "CURVE" if keys else "no CURVE")
            metrics.write({"event": "start", "round": r, "time": time.time(), "incarnation": incarnation,
                           "resumed_from": start_round, "rejoined": crashed})
            while r < rounds and not self.stop_event.is_set():
                for j, endpoint in heartbeat.take_endpoint_updates().items():
                    if j in self.neighbours:
                        transport.connect(j, endpoint)
                if faulty is not None:
                    faulty.set_round(r)
                snapshot = (x.clone(), {k: v.clone() for k, v in state.items()})
                t0 = time.perf_counter()
                loss, grad = task.node_loss_grad(self.index, x, r)
                compute = time.perf_counter() - t0
                wait0, mix0, timeouts0 = exchange.wait_seconds, exchange.mix_seconds, sum(exchange.timeouts.values())
                try:
                    x = algorithm.step(x, state, grad, hp, exchange.gossip_for(r))
                except RoundAbandoned:
                    x, state = snapshot
                    log.info("round %d abandoned on request", r)
                    break
                except CatchUp as ahead:
                    # We stalled (SIGSTOP, a long pause) and our neighbours went on without us: they dropped our
                    # edges. Rejoin like a restarted node: say hello (they answer with their round and resend
                    # their last messages, which we dropped as too far ahead), zero the tracker, new epochs.
                    x, state = snapshot
                    log.warning("round %d: neighbours are at round %d; catching up (tracker reset)", r, ahead.round)
                    catchups += 1
                    exchange.replies.clear()
                    exchange.hello(r, transport.endpoint, reset=True)
                    before = r
                    r, x = self._rejoin(exchange, edges, x, state, r)
                    metrics.write({"event": "catchup", "round": before, "to": r, "time": time.time()})
                    self._checkpoint(r, x, state, edges, clean=False)
                    continue
                edges.settle(state.get("c"))
                r += 1
                stats = transport.stats
                metrics.write({"event": "round", "round": r, "loss": loss, "compute_s": compute,
                               "wait_s": exchange.wait_seconds - wait0, "mix_s": exchange.mix_seconds - mix0,
                               "used": sum(exchange.last_round_used.values()),
                               "excluded": sum(exchange.timeouts.values()) - timeouts0,
                               "bytes_out": stats["bytes_out"], "bytes_in": stats["bytes_in"], "time": time.time()})
                if not math.isfinite(loss):
                    log.error("loss is %s at round %d: training diverged", loss, r)
                heartbeat.update(round=r, state="training", loss=loss, **_counters(stats))
                if r % every == 0 or r == rounds:
                    last_eval = self._evaluate(task, x, snapshot[0], exchange, r)
                    metrics.write(last_eval)
                    heartbeat.update(accuracy=last_eval.get("test_accuracy"))
                    log.info("round %d/%d loss %.4f %s", r, rounds, loss, _fmt(last_eval))
                if self.cfg.checkpoint_every and r % self.cfg.checkpoint_every == 0:
                    self._checkpoint(r, x, state, edges, clean=False)
            finished = r >= rounds
            if finished and last_eval.get("round") != r:
                # Reached the end by a jump (a rejoin or catch-up at the last rounds): evaluate what we finish with,
                # so the summary never reports an earlier model's accuracy as the final one.
                last_eval = self._evaluate(task, x, x, exchange, r)
                metrics.write(last_eval)
            self._checkpoint(r, x, state, edges, clean=True)
            if finished:
                exchange.goodbye(r, grace=self.cfg.deadline_ceiling)
            summary.update({"final_round": r, "finished": finished, "dropped": dict(exchange.dropped),
                            "max_rss_mb": peak_rss_mb(), "ignored": dict(exchange.ignored),
                            "faulty_neighbours": dict(exchange.faulty), "timeouts": dict(exchange.timeouts),
                            "rollbacks": edges.rollbacks, "catchups": catchups, "rejoined": crashed,
                            "max_wait_s": exchange.max_wait,
                            **{k: v for k, v in last_eval.items() if k not in ("event", "params")},
                            **_counters(transport.stats)})
            (self.state_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            metrics.write({"event": "exit", "round": r, "finished": finished, "dropped": dict(exchange.dropped),
                           "time": time.time()})
            if heartbeat is not None:
                heartbeat.update(round=r, state="done" if finished else "stopped")
                heartbeat.flush()
            return summary
        finally:
            if heartbeat is not None:
                heartbeat.stop()
            try:
                client.leave(self.cfg.id, incarnation)
            except Exception as exc:  # the bootstrap may be gone; leaving is a courtesy
                log.debug("leave failed: %s", exc)
            client.close()
            transport.close()
            metrics.close()

    def _rendezvous(self, client: BootstrapClient, endpoint: str, incarnation: str, previous: str | None, *,
                    resuming: bool) -> dict[int, dict[str, Any]] | None:
        """Register and wait for the start; a restarted node whose bootstrap is gone uses its cached table."""
        keys = self.keys
        cached = read_table(self.state_dir) if resuming else None
        if cached is not None:
            client.retries = 1  # one try: with a table in hand, a dead bootstrap must not keep us out for long
        try:
            client.register(self.cfg.id, endpoint, fingerprint=self.fingerprint, incarnation=incarnation,
                            public_key=None if keys is None else keys.public.decode(), replaces=previous)
            table = client.wait_start(self.cfg.id, incarnation, timeout=self.cfg.start_timeout,
                                      should_stop=self.stop_event.is_set)
        except BootstrapUnavailable:
            if cached is None:
                raise
            log.warning("bootstrap %s does not answer; rejoining with the cached address table", self.cfg.bootstrap)
            return cached
        finally:
            client.retries = self.cfg.bootstrap_retries
        if table is not None:
            write_table(self.state_dir, table)
        return table

    def _rejoin(self, exchange: Exchange, edges: NodeEdges, x: torch.Tensor, state: dict[str, torch.Tensor],
                start_round: int) -> tuple[int, torch.Tensor]:
        """After a crash: learn the neighbours' round, reset the tracker, start new edge epochs (docs/design.md §4)."""
        exchange.wait_replies(start_round, self.cfg.rejoin_wait)
        # The slowest neighbour's round: it still holds (and resent) its messages of that round, and those ahead
        # wait for us, whereas jumping to the fastest would leave the slowest waiting for rounds we skipped.
        # Without any answer (they may not hear us yet), the rounds their own messages announced are the guide.
        known = exchange.replies or {j: k for j, k in exchange.seen_round.items() if j not in exchange.byes}
        r = max(start_round, min(known.values(), default=start_round))
        average = (not rejoin_from_checkpoint(self.cfg.rejoin, r - start_round, self.cfg.checkpoint_every)
                   and bool(exchange.latest))
        if average:
            theirs = [tensors["x"].to(x.device, x.dtype) for _, tensors in exchange.latest.values()]
            x = torch.stack(theirs).mean(dim=0)
            for value in state.values():  # the old momentum belongs to the old model: start afresh at the new one
                value.zero_()
        edges.restart(state.get("c"))
        exchange.skip_to(r)
        exchange.latest.clear()
        log.warning("rejoining at round %d (checkpoint round %d, neighbours' rounds %s, parameters from the %s)", r,
                    start_round, dict(sorted(known.items())),
                    "neighbours' average" if average else "checkpoint")
        return r, x

    def _checkpoint(self, round_: int, x: torch.Tensor, state: dict[str, torch.Tensor], edges: NodeEdges, *,
                    clean: bool) -> None:
        # A clean checkpoint (written at exit, all edges consistent) resumes exactly; a periodic one is older
        # than what the neighbours hold, so after a crash the node rejoins (tracker reset, new edge epochs).
        flows = {f"flow.{j}": f for j, f in edges.flow.items()}
        save_checkpoint(self.state_dir, Checkpoint(
            node_id=self.cfg.id, run=self.fingerprint, round=round_, params=x, state={**state, **flows},
            extra={"time": time.time(), "clean": clean, "epochs": {str(j): e for j, e in edges.epoch.items()}}))

    def _evaluate(self, task: QuadraticTask | ImageTask, x: torch.Tensor, x_before: torch.Tensor,
                  exchange: Exchange, round_: int) -> dict[str, Any]:
        record: dict[str, Any] = {"event": "eval", "round": round_, "epoch": round_ / task.rounds_per_epoch}
        if isinstance(task, ImageTask):
            record["test_accuracy"] = float(task.accuracy(x.unsqueeze(0), "test", self.settings.eval_samples)[0])
        else:
            record["distance_to_optimum"] = task.problem.distance_to_optimum(x.unsqueeze(0).cpu())
        # Distance to the neighbours' models of this round, all taken before the round's update.
        if exchange.neighbour_x:
            mine = x_before.cpu()
            dists = [float(((mine - xj) ** 2).sum()) for xj in exchange.neighbour_x.values()]
            record["consensus_distance"] = sum(dists) / len(dists)
        if self.cfg.record_params:
            record["params"] = x.detach().cpu().double().tolist()
        return record


def checkpoint_edges(ckpt: Checkpoint) -> dict[str, object]:
    epochs = ckpt.extra.get("epochs", {})
    return {"epoch": {int(j): int(e) for j, e in epochs.items()},
            "flow": {int(k.split(".", 1)[1]): v for k, v in ckpt.state.items() if k.startswith("flow.")}}


def _counters(stats: dict[str, int]) -> dict[str, int]:
    return {key: stats.get(key, 0) for key in ("bytes_out", "bytes_in", "auth_mismatch")}


def _fmt(ev: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in ev.items() if isinstance(v, float) and k != "epoch")
