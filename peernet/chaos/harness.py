"""Run a chaos scenario: a local cluster (optionally one network namespace per process) and its timed events."""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from peernet.chaos.netns import NetnsLab
from peernet.chaos.scenario import Event, Scenario
from peernet.errors import Interrupted, ScenarioFailed
from peernet.metrics.progress import Progress
from peernet.node.failures import describe_failures
from peernet.node.launcher import LocalCluster, write_toml
from peernet.node.results import merge_run
from peernet.procs import Reaper
from peernet.rundir import STOPPED_NAME, write_stopped

log = logging.getLogger("peernet.chaos")

POLL_S = 0.1
PROGRESS_S = 1.0  # how often the progress line reads the nodes' metrics files (every poll would cost a core)


class ChaosRun:
    """One execution of a scenario into a run directory; ``run()`` returns the report (also ``chaos.json``)."""

    def __init__(self, scenario: Scenario, out: str | Path, *, keep_fds: Sequence[int] = (), progress: bool = False
                 ) -> None:
        """``keep_fds``: handed to the reaper, e.g. the run directory's lock, held until it has cleaned up;
        ``progress``: a progress line on stderr (slowest and fastest node's round), as `peernet local` shows."""
        self.scenario = scenario
        self.out = Path(out)
        self.cluster = LocalCluster.prepare(scenario.settings, self.out, scenario.node_options, curve=True)
        self.lab: NetnsLab | None = None
        self.timeline: list[dict[str, Any]] = []
        self.gone: set[int] = set()   # killed and not restarted: not waited for at the end
        self.t0 = 0.0
        self.keep_fds = tuple(keep_fds)
        self.ended: list[dict[str, Any]] = []  # how each process ended, once the cluster is stopped
        self.removed: list[str] = []            # namespaces deleted at the end
        self.progress = progress
        self.bar: Progress | None = None
        self._next_progress = 0.0
        self._shown = (-1, -1)

    def _member(self, node: int) -> str:
        return f"n{node}"

    def _open_network(self) -> NetnsLab:
        net = self.scenario.network
        assert net is not None
        ids = list(self.cluster.topology.ids)
        lab = NetnsLab(["boot", *[self._member(i) for i in ids]], reaper=self.cluster.reaper)
        self.lab = lab  # before open(): what it makes on the way is deleted even if it fails half-way
        lab.open()
        self.cluster.prefix["bootstrap"] = lab.exec_prefix("boot")
        boot = self.out / "bootstrap.toml"
        from peernet.config import read_toml

        cfg = read_toml(boot)
        cfg["listen"] = f"tcp://{lab.address('boot')}:{net.port - 1}"
        write_toml(boot, cfg)
        for i in ids:
            self.cluster.prefix[i] = lab.exec_prefix(self._member(i))
            self.cluster.listen[i] = f"tcp://{lab.address(self._member(i))}:{net.port}"
        if net.loss_percent:
            lab.set_loss(net.loss_percent)
        if net.rate:
            lab.set_rate(net.rate)
        return lab

    # -- events ----------------------------------------------------------------------------------------
    def _due(self, event: Event, last: float) -> bool:
        now = time.monotonic()
        if event.at_time is not None:
            return now - self.t0 >= event.at_time
        if event.after is not None:
            return now - last >= event.after
        watch = event.watch if event.watch is not None else (event.node if event.node is not None else 0)
        return self.cluster.rounds_done()[watch] >= (event.at_round or 0)

    def _apply(self, event: Event) -> None:
        c, lab = self.cluster, self.lab
        node = event.node
        if event.action in ("kill", "stop", "cont"):
            assert node is not None
            sig = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "cont": signal.SIGCONT}[event.action]
            c.nodes[node].send_signal(sig)
            if event.action == "kill":
                c.nodes[node].wait(timeout=10)
                self.gone.add(node)
        elif event.action == "restart":
            assert node is not None
            c.start_node(node, fresh=False)
            self.gone.discard(node)
        elif event.action == "kill_bootstrap":
            assert c.bootstrap is not None
            c.bootstrap.send_signal(signal.SIGKILL)
            c.bootstrap.wait(timeout=10)
        elif event.action == "restart_bootstrap":
            c.start_bootstrap(restart=True)
        else:
            assert lab is not None
            members = None if event.nodes is None else [self._member(i) for i in event.nodes]
            if event.action == "loss":
                lab.set_loss(event.percent or 0.0, members)
            elif event.action == "rate":
                assert event.rate is not None
                lab.set_rate(event.rate, members)
            elif event.action == "partition":
                assert event.groups is not None
                lab.partition([[self._member(i) for i in g] for g in event.groups])
            else:
                lab.heal()

    def _check_nodes(self) -> None:
        failed = {f"node {i}": (proc.poll(), self.out / f"node{i}.log") for i, proc in self.cluster.nodes.items()
                  if i not in self.gone and proc.poll() not in (None, 0)}
        if failed:
            raise ScenarioFailed(f"failed: {describe_failures(failed)}")

    def _wait(self, until: float) -> bool:
        """Sleep one poll interval; False once the scenario's time is up."""
        self._check_nodes()
        self._show_progress()
        time.sleep(POLL_S)
        return time.monotonic() < until

    def _show_progress(self) -> None:
        now = time.monotonic()
        if not self.progress or now < self._next_progress:
            return
        self._next_progress = now + PROGRESS_S
        if self.bar is None:
            from peernet.config import total_rounds
            from peernet.tasks import rounds_per_epoch

            settings, n = self.scenario.settings, self.cluster.topology.n
            rounds = total_rounds(settings, 1 if settings.rounds else rounds_per_epoch(settings, n))
            self.bar = Progress(rounds, f"chaos {self.scenario.name}", min_interval=PROGRESS_S)
        done = [r for i, r in self.cluster.rounds_done().items() if i not in self.gone] or [0]
        if (min(done), max(done)) != self._shown:  # off a terminal, a line per change (finished nodes wait to exit)
            self._shown = (min(done), max(done))
            self.bar.update(min(done), slowest=min(done), fastest=max(done))

    # -- run -------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run the scenario; the report. On a stop signal (Interrupted) everything is ended, stopped.json
        says what was done, and the exception goes on up. A reaper ends all of it if this process is killed."""
        reaper = Reaper(self.out / STOPPED_NAME, self.keep_fds)
        self.cluster.reaper = reaper
        try:
            return self._run()
        except Interrupted as exc:
            rounds = self.cluster.rounds_done()
            exc.summary = write_stopped(self.out, {
                "command": "chaos", "scenario": self.scenario.name, "cause": exc.signame,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(time.monotonic() - self.t0, 3) if self.t0 else 0.0,
                "events": self.timeline, "rounds": {str(i): r for i, r in rounds.items()},
                "processes": self.ended, "namespaces": self.removed})
            raise
        finally:
            reaper.close()

    def _stop_cluster(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.ended = self.cluster.stop()

    def _close_lab(self) -> None:
        if self.lab is not None:
            self.removed += self.lab.close()

    def _run(self) -> dict[str, Any]:
        sc = self.scenario
        with ExitStack() as stack:
            if sc.network is not None:
                stack.callback(self._close_lab)
                self.lab = self._open_network()
            stack.callback(self._stop_cluster)
            self.cluster.start()
            self.t0 = time.monotonic()
            until = self.t0 + sc.timeout
            last = self.t0
            for event in sc.events:
                while not self._due(event, last):
                    if not self._wait(until):
                        raise ScenarioFailed(f"timed out after {sc.timeout:g}s waiting to apply {event}")
                self._apply(event)
                last = time.monotonic()
                rounds = self.cluster.rounds_done()
                self.timeline.append({"action": event.action, "node": event.node, "time": round(last - self.t0, 3),
                                      "rounds": rounds})
                log.info("t=%.1fs %s%s (rounds %s)", last - self.t0, event.action,
                         "" if event.node is None else f" node {event.node}", rounds)
            while any(p.poll() is None for i, p in self.cluster.nodes.items() if i not in self.gone):
                if not self._wait(until):
                    raise ScenarioFailed(f"the cluster did not finish within {sc.timeout:g}s; logs in {self.out}")
            self._check_nodes()
            wall = time.monotonic() - self.t0
        finished = {i: self.cluster.state_dir(i) for i in self.cluster.topology.ids if i not in self.gone}
        report = {"scenario": sc.name, "events": self.timeline, "gone": sorted(self.gone),
                  "summary": merge_run(sc.settings, self.cluster.topology, finished, wall)}
        (self.out / "chaos.json").write_text(json.dumps(report, indent=2) + "\n")
        (self.out / "summary.json").write_text(json.dumps(report["summary"], indent=2) + "\n")
        return report
