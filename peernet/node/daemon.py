"""The node daemon: register, wait for the start signal, train round by round with its neighbours, checkpoint."""

from __future__ import annotations

import gc
import json
import logging
import math
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from peernet.atomic import write_atomic
from peernet.bootstrap.client import BootstrapClient, new_incarnation
from peernet.config import (
    RunSettings,
    eval_interval,
    load_run_settings,
    resolve_topology,
    run_fingerprint,
    scheduled_step_size,
    total_rounds,
    tracker_start,
)
from peernet.core.algorithms import Algorithm, HyperParams, MomentumTracking, get_algorithm
from peernet.core.clipping import clip_radii
from peernet.core.compressed_gossip import NodeCompressedGossip
from peernet.core.edge_copies import EdgeCopies
from peernet.core.edges import NodeEdges
from peernet.core.topology import GENERATORS
from peernet.device import resolve_device
from peernet.endpoint_file import read_endpoint, write_endpoint
from peernet.errors import (
    BootstrapRejected,
    BootstrapUnavailable,
    CatchUp,
    PeernetError,
    RoundAbandoned,
    StateOutOfBounds,
    TransportError,
)
from peernet.metrics.jsonl import MetricsWriter
from peernet.metrics.memory import peak_rss_mb
from peernet.node.checkpoint import Checkpoint, clear_stale_temp_files, load_checkpoint, save_checkpoint
from peernet.node.config import NodeConfig
from peernet.node.curve import load_node_keys
from peernet.node.exchange import Exchange
from peernet.node.heartbeat import Heartbeat
from peernet.node.monitor import NodeMonitor
from peernet.node.session import Session
from peernet.node.statefiles import read_incarnation, read_table, write_incarnation, write_table
from peernet.node.wiring import Wiring
from peernet.security.zap import warn_if_exposed
from peernet.tasks import ImageTask, QuadraticTask, make_task, run_compressor
from peernet.transport import CurveKeys, Transport
from peernet.transport.faults import INJECTED_KEYS, FaultyTransport
from peernet.wire.messages import TensorSpec

log = logging.getLogger("peernet.node")


class NodeDaemon:
    """One node of a run. ``run()`` returns when training is finished or the node was told to stop."""

    def __init__(self, cfg: NodeConfig, *, fresh: bool = False, wiring: Wiring | None = None) -> None:
        self.cfg = cfg
        self.fresh = fresh
        self.wiring = wiring if wiring is not None else Wiring()
        self.policy = cfg.round_policy()
        self.round = 0  # the last round finished, for whoever embeds the daemon (wait_round)
        self._progress = threading.Condition()
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
        #: A clean checkpoint's last round messages, held again for neighbours that stopped a round behind.
        self.saved_sent: dict[int, dict[int, list[bytes]]] = {}
        self.saved_momentum = False
        self.monitor: NodeMonitor | None = None  # Prometheus metrics, with metrics_listen
        #: The running session, for observers in the same process (an in-process cluster's tests): read only.
        self.session: Session | None = None

    # -- signals ---------------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("received %s: finishing cleanly (checkpoint, then exit)", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        # SIGHUP too: a closed terminal or ssh session would otherwise end the node without its checkpoint.
        # Unless it is ignored (nohup, or a launcher started so): then the node is meant to outlive the terminal.
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            signal.signal(signal.SIGHUP, handler)

    def _advance(self, round_: int) -> None:
        with self._progress:
            self.round = round_
            self._progress.notify_all()

    def wait_round(self, round_: int, timeout: float) -> bool:
        """Block until this daemon has finished ``round_`` (True) or ``timeout`` seconds passed (False)."""
        with self._progress:
            return self._progress.wait_for(lambda: self.round >= round_, timeout)

    # -- phases --------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Build, rendezvous, train, finish; whatever happens, close what was opened."""
        session = self.session = self.build()
        try:
            if not self.start(session):
                log.info("stopped while waiting for the start signal")
                return {**self._summary(session), "final_round": session.round, "finished": False}
            try:
                self.train(session)
            except StateOutOfBounds as exc:
                self._out_of_bounds(session, exc)
                raise
            return self.finish(session)
        finally:
            self.close(session)

    def build(self) -> Session:
        """Task, rule, restored state, transport, bootstrap client and exchange; nothing is sent to a neighbour
        yet. Meanwhile the heartbeat thread reports the node as loading (its data can take half a minute)."""
        torch.set_num_threads(self.cfg.threads)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        clear_stale_temp_files(self.state_dir)
        incarnation, previous = new_incarnation(), read_incarnation(self.state_dir)
        write_incarnation(self.state_dir, incarnation)
        heartbeat = self._loading_heartbeat(incarnation, previous)
        try:
            return self._build(incarnation, previous, heartbeat)
        except BaseException:
            heartbeat.stop(leave=True)
            raise

    def _loading_heartbeat(self, incarnation: str, previous: str | None) -> Heartbeat:
        """A started heartbeat that first tells the bootstrap this node is loading (docs/bootstrap.md), so
        `peernet status` shows "loading", not "unregistered"; an older bootstrap without the op is no error."""
        keys = self.keys

        def announce(client: BootstrapClient) -> None:
            try:
                client.loading(self.cfg.id, fingerprint=self.fingerprint, incarnation=incarnation,
                               public_key=None if keys is None else keys.public.decode(), replaces=previous)
            except BootstrapRejected as exc:  # the registration after loading is refused alike and ends the node
                log.warning("the bootstrap refuses this node: %s", exc.reason)
            except PeernetError as exc:
                log.debug("loading announcement not delivered: %s", exc)

        heartbeat = Heartbeat(self.cfg, incarnation,
                              lambda: self.wiring.bootstrap(self.cfg, None if keys is None else keys.client()),
                              announce=announce, state="loading")
        heartbeat.start()
        return heartbeat

    def _build(self, incarnation: str, previous: str | None, heartbeat: Heartbeat) -> Session:
        """What build() makes, while ``heartbeat`` says the node is loading."""
        task = make_task(self.settings, self.topology.n, self.index)
        if self.device.type != "cpu":  # either task, as the simulator does: the model and its data on the device
            task.to_device(self.device)
        algorithm = get_algorithm(self.settings.algorithm)
        hp = HyperParams(lr=self.settings.step_size, beta=self.settings.beta, weight_decay=self.settings.weight_decay)
        rounds = total_rounds(self.settings, task.rounds_per_epoch)
        start = tracker_start(self.settings, rounds, gossip_only=True)
        edges = NodeEdges(self.neighbours, tracks=algorithm.tracks, rollback=self.cfg.rollback)
        x, state, start_round, crashed, resuming = self.restore(task, algorithm, edges)
        layout = {name: TensorSpec(name, "float64" if task.dtype == torch.float64 else "float32", (task.dim,))
                  for name in algorithm.sent}
        copies = self._edge_copies(task)
        # The full layout is the largest message of a compressed run too (the full copies that start an epoch).
        transport, faulty = self._transport(sum(s.nbytes for s in layout.values()))
        keys = self.keys
        endpoints: dict[int, str] = {}  # filled at the start, kept current from the bootstrap's table
        exchange = Exchange(transport, self.cfg.id, self.fingerprint, self.neighbours, layout, edges=edges,
                            policy=self.policy, tracked=algorithm.flow or None, max_abs=self.cfg.max_abs or None,
                            should_stop=self.stop_event.is_set, clock=self.wiring.clock, last_round=rounds,
                            degrees={j: len(self.topology.neighbours(j)) for j in self.neighbours},
                            trusted_endpoints=endpoints,
                            clip=clip_radii(algorithm, self.settings.clip_tau, self.settings.clip_tau_tracker),
                            copies=copies)
        exchange.restore_sent(self.saved_sent)
        return Session(task=task, algorithm=algorithm, hp=hp, rounds=rounds, every=eval_interval(self.settings, rounds),
                       edges=edges, x=x, state=state, start_round=start_round, crashed=crashed, resuming=resuming,
                       transport=transport, faulty=faulty,
                       client=self.wiring.bootstrap(self.cfg, None if keys is None else keys.client()),
                       incarnation=incarnation, previous=previous, exchange=exchange, round=start_round,
                       endpoints=endpoints, heartbeat=heartbeat, start=start, has_momentum=self.saved_momentum,
                       metrics=MetricsWriter(self.state_dir / "metrics.jsonl", append=not self.fresh))

    def _edge_copies(self, task: QuadraticTask | ImageTask) -> EdgeCopies | None:
        """The run's compressed gossip for this node (None: plain gossip), built as the simulator builds its own
        (peernet.tasks.run_compressor), with this node's index in the topology as its row, so that its messages
        are the simulator's."""
        made = run_compressor(self.settings, task)
        return None if made is None else EdgeCopies(NodeCompressedGossip(self.index, *made))

    def restore(self, task: QuadraticTask | ImageTask, algorithm: Algorithm, edges: NodeEdges,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor], int, bool, bool]:
        """(x, state, round, crashed, resuming): from the checkpoint if there is one, else the run's start.

        A clean checkpoint (written at exit, all edges consistent) resumes exactly, and its last sent round
        message is held again (``saved_sent``) for a neighbour that stopped a round behind; a periodic one is
        older than what the neighbours hold, so the node rejoins (``crashed``: tracker reset, new edge epochs).
        """
        x = task.initial_params().to(self.device)
        ckpt = None if self.fresh else load_checkpoint(self.state_dir, node_id=self.cfg.id, run=self.fingerprint)
        if ckpt is None:
            return x, algorithm.init_state(x), 0, False, False
        x = ckpt.params.to(self.device, task.dtype)
        state = {k: v.to(self.device, task.dtype) for k, v in ckpt.state.items() if not k.startswith("flow.")}
        crashed = not ckpt.extra.get("clean", False)
        # Whether the momentum it holds is the node's first one already (the average start takes it only once).
        self.saved_momentum = bool(ckpt.extra.get("has_momentum", ckpt.round > 0))
        if not crashed:
            edges.load_state_dict(checkpoint_edges(ckpt))
            self.saved_sent = ckpt.sent
        log.info("resuming from checkpoint at round %d (%s)", ckpt.round,
                 "periodic: the node stopped abruptly and rejoins" if crashed else "written at a clean exit")
        return x, state, ckpt.round, crashed, True

    def _transport(self, payload: int) -> tuple[Transport, FaultyTransport | None]:
        keys = self.keys
        if keys is None:
            warn_if_exposed(self.cfg.listen, f"node {self.cfg.id}", "Create keys with `peernet keygen --cluster "
                            "DIR` and set secret_key and bootstrap_public_key_file (docs/node.md, CURVE).")
        curve = None if keys is None else keys.transport()
        transport = self._bind(2 * payload + (1 << 20), curve)
        if self.cfg.faults is None:
            return transport, None
        log.warning("fault injection is on: %s", self.cfg.faults)
        faulty = FaultyTransport(transport, self.cfg.faults, clock=self.wiring.clock)
        return faulty, faulty

    def _bind(self, max_msg_size: int, curve: CurveKeys | None) -> Transport:
        """Bind as configured; with a port left to chance (``*`` or 0), first try the port this node had last
        time, so a restarted node keeps its endpoint and its neighbours need no new address (they follow a
        changed one only from the bootstrap's table: docs/security.md)."""
        previous = read_endpoint(self.state_dir)
        host, _, port = self.cfg.listen.rpartition(":")
        if previous is not None and port in ("*", "0") and not self.fresh:
            old_port = previous.rpartition(":")[2]
            if old_port.isdigit():
                try:
                    return self.wiring.transport(replace(self.cfg, listen=f"{host}:{old_port}"), max_msg_size, curve)
                except TransportError:
                    log.info("port %s of the previous run is taken; binding %s", old_port, self.cfg.listen)
        return self.wiring.transport(self.cfg, max_msg_size, curve)

    def start(self, s: Session) -> bool:
        """Rendezvous, connect the neighbours, say hello (and rejoin after a crash); the heartbeat says training.

        False if the node was told to stop before the run started.
        """
        log.info("node %d listening on %s; registering with bootstrap %s", self.cfg.id, s.transport.endpoint,
                 self.cfg.bootstrap)
        write_endpoint(self.state_dir, s.transport.endpoint)
        if self.cfg.metrics_listen is not None:
            self.monitor = NodeMonitor(self.cfg.metrics_listen, self.cfg.id, self.state_dir, {
                "run": self.fingerprint, "algorithm": self.settings.algorithm, "device": str(self.device)})
            self.monitor.started(s)
            log.info("metrics at %s", self.monitor.server.url)
        assert s.heartbeat is not None
        s.heartbeat.update(state="waiting")  # loaded: "loading" would undo what registering says
        table, s.table_source = self._rendezvous(s.client, s.transport.endpoint, s.incarnation, s.previous,
                                                 resuming=s.resuming)
        if table is None:
            return False
        missing = sorted(j for j in self.neighbours if j not in table)
        if missing:
            raise TransportError(f"the address table has no entry for neighbours {missing}: cannot connect to them")
        for j in self.neighbours:
            s.endpoints[j] = table[j]["endpoint"]
            s.transport.connect(j, s.endpoints[j])
        keys = self.keys
        s.exchange.hello(s.start_round, s.transport.endpoint, reset=s.crashed)
        if s.crashed:
            s.round, s.x = self._rejoin(s, s.start_round)
            self._checkpoint(s, clean=False)  # never older than the interval, even now
        log.info("started: %d rounds, neighbours %s, device %s, %s", s.rounds, sorted(self.neighbours), self.device,
                 "CURVE" if keys else "no CURVE")
        self._advance(s.round)
        s.heartbeat.update(state="training", round=s.round)
        s.metrics.write({"event": "start", "round": s.round, "time": time.time(), "incarnation": s.incarnation,
                         "resumed_from": s.start_round, "rejoined": s.crashed, "parameters_from": s.rejoin_source,
                         "address_table": s.table_source})
        return True

    def train(self, s: Session) -> None:
        """Rounds until the last one, or until told to stop."""
        # Everything built so far (torch's modules, the model, the data) lives until the end: out of the
        # collector's sight, a full collection no longer walks it (measured: ~7% of a LeNet daemon's CPU).
        gc.collect()
        gc.freeze()
        while s.round < s.rounds and not self.stop_event.is_set():
            if not self._round(s):
                return

    def _round(self, s: Session) -> bool:
        """One round: gradient, the rule with its gossip, bookkeeping. False: stop training (abandoned)."""
        assert s.heartbeat is not None
        start, start_cpu = time.perf_counter(), time.thread_time()
        for j, endpoint in s.heartbeat.take_endpoint_updates().items():
            if j in self.neighbours:
                s.endpoints[j] = endpoint
                s.transport.connect(j, endpoint)
        if s.faulty is not None:
            s.faulty.set_round(s.round)
        # No copy of x and the state: the rules change neither before their gossip returns (core/algorithms.py),
        # so an abandoned round leaves the round's starting point as it was.
        x_before = s.x
        t0, c0 = time.perf_counter(), time.thread_time()
        loss, grad, starting = self._gradient(s)
        compute, compute_cpu = time.perf_counter() - t0, time.thread_time() - c0
        ex = s.exchange
        before = (ex.wait_seconds, ex.mix_seconds, sum(ex.timeouts.values()), ex.wait_cpu + ex.mix_cpu)
        try:
            hp = replace(s.hp, lr=scheduled_step_size(self.settings, s.round, s.rounds))
            s.x = self._rule(s, grad, hp)
        except RoundAbandoned:
            log.info("round %d abandoned on request", s.round)
            return False
        except CatchUp as ahead:
            self._catch_up(s, ahead.round)
            return True
        s.edges.settle(s.tracker)
        s.round += 1
        self._advance(s.round)
        stats = s.transport.stats
        s.metrics.write({"event": "round", "round": s.round, "loss": loss, "compute_s": compute,
                         "wait_s": ex.wait_seconds - before[0], "mix_s": ex.mix_seconds - before[1],
                         "used": sum(ex.last_round_used.values()),
                         "excluded": sum(ex.timeouts.values()) - before[2],
                         "bytes_out": stats["bytes_out"], "bytes_in": stats["bytes_in"], "time": time.time(),
                         **starting})
        if not math.isfinite(loss):
            log.error("loss is %s at round %d: training diverged", loss, s.round)
        s.heartbeat.update(round=s.round, state="training", loss=loss, self_over_bound=ex.self_over_bound,
                           **_counters(stats))
        if self.monitor is not None:
            self.monitor.round_done(s, loss)
        t_eval, cpu = time.perf_counter(), time.thread_time()
        s.timing.add(wall=t_eval - start, accounted=compute + ex.wait_seconds - before[0] + ex.mix_seconds - before[1],
                     cpu=cpu - start_cpu, cpu_accounted=compute_cpu + ex.wait_cpu + ex.mix_cpu - before[3])
        if s.round % s.every == 0 or s.round == s.rounds:
            s.last_eval = self._evaluate(s, x_before)
            log.info("round %d/%d loss %.4f %s", s.round, s.rounds, loss, _fmt(s.last_eval))
        t_ckpt = time.perf_counter()
        if self.cfg.checkpoint_every and s.round % self.cfg.checkpoint_every == 0:
            self._checkpoint(s, clean=False)
        s.timing.eval_s += t_ckpt - t_eval
        s.timing.checkpoint_s += time.perf_counter() - t_ckpt
        return True

    def _gradient(self, s: Session) -> tuple[float, torch.Tensor | None, dict[str, Any]]:
        """The round's loss and gradient (None: the average start's rounds that take none) and, during the start, what
        its round record says about it."""
        grad = None
        takes = s.start is None or s.start.takes_gradient(s.round, s.has_momentum)
        # A node restarted in the middle of the average start holds its first momentum but not its loss: it computes
        # the loss (and drops the gradient) once, so that its round records never report an unknown loss.
        if takes or not math.isfinite(s.loss):
            s.loss, fresh = s.task.node_loss_grad(self.index, s.x, s.round)
            grad = fresh if takes else None
        if s.start is None or s.round > s.start.rounds:
            return s.loss, grad, {}
        return s.loss, grad, {"start": s.start.phase(s.round), "first_momentum": grad is not None}

    def _rule(self, s: Session, grad: torch.Tensor | None, hp: HyperParams) -> torch.Tensor:
        """The round's rule with its gossip: the training step, or a round of the average tracker start."""
        gossip = s.exchange.gossip_for(s.round)
        phase = "train" if s.start is None else s.start.phase(s.round)
        if phase == "train":
            assert grad is not None
            return s.algorithm.step(s.x, s.state, grad, hp, gossip)
        assert isinstance(s.algorithm, MomentumTracking)  # the settings allow the average start only for tracking
        x = s.algorithm.start_step(s.x, s.state, grad, hp, gossip, descend=phase == "first")
        s.has_momentum = True
        return x

    def _catch_up(self, s: Session, ahead: int) -> None:
        """We stalled (SIGSTOP, a long pause) and our neighbours went on without us: they dropped our edges.
        Rejoin like a restarted node: say hello (they answer with their round and resend their last messages,
        which we dropped as too far ahead), zero the tracker, new epochs."""
        log.warning("round %d: neighbours are at round %d; catching up (tracker reset)", s.round, ahead)
        s.catchups += 1
        s.exchange.replies.clear()
        s.exchange.hello(s.round, s.transport.endpoint, reset=True)
        before = s.round
        s.round, s.x = self._rejoin(s, s.round, restarted=False)
        self._advance(s.round)
        s.metrics.write({"event": "catchup", "round": before, "to": s.round, "parameters_from": s.rejoin_source,
                         "time": time.time()})
        self._checkpoint(s, clean=False)

    def finish(self, s: Session) -> dict[str, Any]:
        """Final evaluation, clean checkpoint, goodbye, summary.json; returns the summary."""
        finished = s.round >= s.rounds
        if finished and s.last_eval.get("round") != s.round:
            # Reached the end by a jump (a rejoin or catch-up at the last rounds): evaluate what we finish with,
            # so the summary never reports an earlier model's accuracy as the final one.
            s.last_eval = self._evaluate(s, s.x)
        self._checkpoint(s, clean=True)
        if finished:
            s.exchange.goodbye(s.round)
        return self._write_summary(s, {"finished": finished})

    def _out_of_bounds(self, s: Session, exc: StateOutOfBounds) -> None:
        """Our own tensors left the bound (a neighbour pushed us there): we sent nothing of it and stop. No
        checkpoint of the poisoned state; the summary says why, and whose values led ours (docs/security.md)."""
        log.error("stopping: %s", exc)
        self._write_summary(s, {"finished": False, "stopped": "out_of_bounds", "error": str(exc),
                                "suspects": list(exc.suspects)})

    def _write_summary(self, s: Session, outcome: dict[str, Any]) -> dict[str, Any]:
        """summary.json (and the exit record, the heartbeat's last state) with ``outcome``; returns the summary."""
        finished = bool(outcome.get("finished"))
        ex = s.exchange
        summary = {**self._summary(s), "final_round": s.round, **outcome, "dropped": dict(ex.dropped),
                   "max_rss_mb": peak_rss_mb(), "ignored": dict(ex.ignored), "faulty_neighbours": dict(ex.faulty),
                   "self_over_bound": ex.self_over_bound, "neighbour_lead": dict(sorted(ex.lead.items())),
                   "timeouts": dict(ex.timeouts), "rollbacks": s.edges.rollbacks, "catchups": s.catchups,
                   **_compression_counters(ex),
                   "rejoined": s.crashed, "parameters_from": s.rejoin_source, "address_table": s.table_source,
                   "max_wait_s": ex.max_wait, **s.timing.summary(),
                   **{k: v for k, v in s.last_eval.items() if k not in ("event", "params")},
                   **_counters(s.transport.stats),
                   "injected": {k: s.faulty.stats[k] for k in INJECTED_KEYS} if s.faulty is not None else {}}
        write_atomic(self.state_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
        s.metrics.write({"event": "exit", "round": s.round, "finished": finished, "dropped": dict(ex.dropped),
                         "time": time.time()})
        if s.heartbeat is not None:
            s.heartbeat.update(round=s.round, state="done" if finished else "stopped",
                               self_over_bound=ex.self_over_bound, **_counters(s.transport.stats))
            s.heartbeat.flush()
        if self.monitor is not None:
            self.monitor.counters(s)
        return summary

    def _summary(self, s: Session) -> dict[str, Any]:
        return {"node": self.cfg.id, "rounds": s.rounds, "resumed_from": s.start_round}

    def close(self, s: Session) -> None:
        """Stop the heartbeat, leave the bootstrap (a courtesy: it may be gone), close sockets and files."""
        if s.heartbeat is not None:
            s.heartbeat.stop()
        try:
            s.client.retries = 1  # a courtesy: one try, so a dead bootstrap does not hold the exit up
            s.client.leave(self.cfg.id, s.incarnation)
        except Exception as exc:  # the bootstrap may be gone; leaving is a courtesy
            log.debug("leave failed: %s", exc)
        s.client.close()
        s.exchange.flush_warnings()
        s.transport.close()
        s.metrics.close()
        if self.monitor is not None:
            self.monitor.close()

    def _rendezvous(self, client: BootstrapClient, endpoint: str, incarnation: str, previous: str | None, *,
                    resuming: bool) -> tuple[dict[int, dict[str, Any]] | None, str]:
        """Register and wait for the start; a restarted node whose bootstrap is gone uses its cached table.

        Returns the table (None: told to stop first) and where it came from: "bootstrap" or "cached".
        """
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
            return cached, "cached"
        finally:
            client.retries = self.cfg.bootstrap_retries
        if table is not None:
            write_table(self.state_dir, table)
        return table, "bootstrap"

    def _rejoin(self, s: Session, start_round: int, *, restarted: bool = True) -> tuple[int, torch.Tensor]:
        """After a crash (``restarted``: from a checkpoint) or a stall: learn the neighbours' round, reset the
        tracker, start new edge epochs (docs/design.md §4)."""
        exchange, x = s.exchange, s.x
        exchange.wait_replies(start_round, self.cfg.rejoin_wait)
        # Without any answer (they may not hear us yet), the rounds their own messages announced are the guide.
        known = exchange.replies or {j: k for j, k in exchange.seen_round.items() if j not in exchange.byes}
        r = self.policy.rejoin_round(start_round, known.values())
        average = (not self.policy.rejoin_from_checkpoint(self.cfg.rejoin, r - start_round, self.cfg.checkpoint_every)
                   and bool(exchange.latest))
        if average:
            theirs = [tensors["x"].to(x.device, x.dtype) for _, tensors in exchange.latest.values()]
            x = torch.stack(theirs).mean(dim=0)
            for value in s.state.values():  # the old momentum belongs to the old model: start afresh at the new one
                value.zero_()
            s.has_momentum = False
        s.edges.restart(s.tracker)
        # A stalled node loaded no checkpoint: it keeps the model it holds ("own"), and its log must say so.
        kept = "checkpoint" if restarted else "own"
        s.rejoin_source = "average" if average else kept
        exchange.skip_to(r)
        exchange.latest.clear()
        log.warning("%s at round %d (%s round %d, neighbours' rounds %s, parameters from the %s)",
                    "rejoining" if restarted else "catching up", r, "checkpoint" if restarted else "stalled at",
                    start_round, dict(sorted(known.items())),
                    "neighbours' average" if average else ("checkpoint" if restarted else "node's own model"))
        return r, x

    def _checkpoint(self, s: Session, *, clean: bool) -> None:
        # A clean checkpoint (written at exit, all edges consistent) resumes exactly; a periodic one is older
        # than what the neighbours hold, so after a crash the node rejoins (tracker reset, new edge epochs).
        flows = {f"flow.{j}": f for j, f in s.edges.flow.items()}
        save_checkpoint(self.state_dir, Checkpoint(
            node_id=self.cfg.id, run=self.fingerprint, round=s.round, params=s.x, state={**s.state, **flows},
            extra={"time": time.time(), "clean": clean, "epochs": {str(j): e for j, e in s.edges.epoch.items()},
                   "has_momentum": s.has_momentum},
            sent=s.exchange.resend_state(s.round) if clean else {}))

    def _evaluate(self, s: Session, x_before: torch.Tensor) -> dict[str, Any]:
        """Evaluate the current model, write the record to metrics.jsonl and the heartbeat, return it."""
        task, x, exchange = s.task, s.x, s.exchange
        record: dict[str, Any] = {"event": "eval", "round": s.round, "epoch": s.round / task.rounds_per_epoch}
        if isinstance(task, ImageTask):
            # The last round on every test sample, as the simulator's last evaluation; before it the first eval_samples.
            limit = 0 if s.round >= s.rounds else self.settings.eval_samples
            record["test_accuracy"] = float(task.accuracy(x.unsqueeze(0), "test", limit)[0])
        else:
            record["distance_to_optimum"] = task.problem.distance_to_optimum(x.unsqueeze(0))  # both on the device
        # Mean squared distance to the neighbours' models of this round, all taken before the round's update. Not
        # the consensus distance (mean_i ‖x_i − x̄‖², which needs every model: summary.json has it), hence the name.
        if exchange.neighbour_x:
            mine = x_before.cpu()
            dists = [float(((mine - xj) ** 2).sum()) for xj in exchange.neighbour_x.values()]
            record["neighbour_distance"] = sum(dists) / len(dists)
        if self.cfg.record_params:
            record["params"] = x.detach().cpu().double().tolist()
        s.metrics.write(record)
        if self.monitor is not None:
            self.monitor.evaluated(record)
        if s.heartbeat is not None:
            s.heartbeat.update(accuracy=record.get("test_accuracy"))
        return record


def checkpoint_edges(ckpt: Checkpoint) -> dict[str, object]:
    epochs = ckpt.extra.get("epochs", {})
    return {"epoch": {int(j): int(e) for j, e in epochs.items()},
            "flow": {int(k.split(".", 1)[1]): v for k, v in ckpt.state.items() if k.startswith("flow.")}}


#: Transport counters in every round's heartbeat and in summary.json: traffic, and every kind of message the
#: transport refused before the exchange saw it (docs/security.md).
TRANSPORT_COUNTERS = ("bytes_out", "bytes_in", "auth_mismatch", "bad_identity", "oversize", "refused_handshakes",
                      "failed_handshakes")


def _compression_counters(ex: Exchange) -> dict[str, Any]:
    """With compression: full messages sent and received (each edge epoch starts with one) and the edges dropped
    because a copy's chain had a gap (docs/node.md, summary.json)."""
    if ex.copies is None:
        return {}
    return {"resyncs_sent": ex.copies.resyncs_sent, "resyncs_received": ex.copies.resyncs_received,
            "broken_chains": dict(ex.broken)}


def _counters(stats: dict[str, int]) -> dict[str, int]:
    return {key: stats.get(key, 0) for key in TRANSPORT_COUNTERS}


def _fmt(ev: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in ev.items() if isinstance(v, float) and k != "epoch")
