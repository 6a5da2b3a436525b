"""SIGTERM, SIGHUP, SIGINT and SIGKILL to `peernet local` and `peernet chaos`: nothing they started survives.

Real processes, checked in the process table (/proc) and, for chaos, in `ip netns list`. SIGTERM goes to the
launcher alone, as `kill PID` does; SIGINT and SIGHUP go to its whole process group, as Ctrl-C and a closed
terminal do, so the nodes get them too and must still exit cleanly. Each test ends whatever it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from peernet.chaos.netns import check_available
from peernet.cli import main
from peernet.metrics.jsonl import read_jsonl
from peernet.rundir import claim_run_dir

#: Short bootstrap timeouts (chaos scenarios can set node options): a node whose bootstrap is gone gives up fast.
SCENARIO = """name = "signals"
timeout = 300
run = "run.toml"
[nodes]
bootstrap_timeout = 0.5
[network]
"""
RUN = 'dataset = "quadratic"\ntopology = "complete"\nnodes = {nodes}\nrounds = 10000000\n'

Launch = Callable[[list[str]], "subprocess.Popen[bytes]"]


def live(marker: str) -> list[str]:
    """Command lines of the live processes (zombies are dead: only their exit status is left) naming ``marker``."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if marker in cmd and stat[stat.rindex(")") + 2] != "Z":
            found.append(f"{d.name}: {cmd}")
    return found


def namespaces(tag: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    return [line.split()[0] for line in listed if line.startswith(tag + "-")]


def poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s")


def training(run: Path, nodes: int) -> bool:
    """Every node has logged a round: all processes are up and past their signal-handler set-up."""
    paths = [run / "nodes" / f"node{i}" / "metrics.jsonl" for i in range(nodes)]
    return all(p.is_file() and any(r.get("event") == "round" for r in read_jsonl(p)) for p in paths)


def default_dispositions() -> None:
    """As from a terminal: a test run in a script's background has SIGINT ignored, which the launcher (and
    its nodes) would rightly keep ignoring."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """``launch(args)`` starts `python -m peernet ARGS` in a session of its own; at the end everything naming
    tmp_path is killed and the launcher's namespaces deleted, whatever the test did."""
    started: list[subprocess.Popen[bytes]] = []

    def start(args: list[str]) -> subprocess.Popen[bytes]:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        with (tmp_path / "launcher.err").open("wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "peernet", *args], stdout=subprocess.DEVNULL, stderr=err,
                                    env=env, start_new_session=True, preexec_fn=default_dispositions)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for line in live(str(tmp_path)):
        os.kill(int(line.split(":")[0]), signal.SIGKILL)
    for proc in started:
        for ns in namespaces(f"pn{proc.pid % 100000}"):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def send(proc: subprocess.Popen[bytes], sig: signal.Signals, group: bool) -> None:
    if group:
        os.killpg(proc.pid, sig)  # Ctrl-C or a hang-up: the launcher and the processes it started
    else:
        proc.send_signal(sig)     # kill PID


def check_clean_stop(proc: subprocess.Popen[bytes], sig: signal.Signals, run: Path, tmp_path: Path) -> dict:
    """Exit 128 + N with one line and no traceback, nothing left running, stopped.json saying what was done."""
    assert proc.wait(timeout=40) == 128 + sig
    err = (tmp_path / "launcher.err").read_text()
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(f"stopped by {sig.name}: ended"), err
    assert live(str(tmp_path)) == []  # the launcher waited for its children and its reaper
    stopped = json.loads((run / "stopped.json").read_text())
    assert stopped["cause"] == sig.name
    assert {p["name"] for p in stopped["processes"]} >= {"bootstrap", "node0"}
    # The nodes acted on the signal (theirs or the launcher's SIGTERM): checkpoint, summary, exit 0.
    assert all(p["exit"] == 0 for p in stopped["processes"]), stopped["processes"]
    assert json.loads((run / "nodes" / "node0" / "summary.json").read_text())["finished"] is False
    return stopped


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("sig", "group", "nodes"), [(signal.SIGTERM, False, 2), (signal.SIGINT, True, 1),
                                                     (signal.SIGHUP, True, 1)], ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_local_stops_everything_on_a_signal(launch: Launch, tmp_path: Path, sig: signal.Signals, group: bool,
                                            nodes: int) -> None:
    run = tmp_path / "run"
    proc = launch(["local", "--dataset", "quadratic", "--topology", "complete", "--nodes", str(nodes),
                   "--rounds", "10000000", "--no-curve", "--quiet", "--out", str(run)])
    poll(lambda: training(run, nodes) or proc.poll() is not None, 60, "the cluster was not training")
    if sig == signal.SIGTERM:  # meanwhile, a second run into the same directory is refused and changes nothing
        before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.glob("*.toml")}
        for extra in ([], ["--force"]):  # in this process: an flock is per open file, so it is refused as well
            second = CliRunner().invoke(main, ["local", "--dataset", "quadratic", "--nodes", "3", "--out", str(run),
                                               *extra])
            assert second.exit_code == 2 and f"is in use by another run (pid {proc.pid}" in second.output, second.output
        assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.glob("*.toml")} == before
        assert (run / "bootstrap.log").stat().st_size > 0  # not truncated
    send(proc, sig, group)
    check_clean_stop(proc, sig, run, tmp_path)


@pytest.mark.timeout(120)
def test_local_processes_end_with_a_sigkilled_launcher(launch: Launch, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = launch(["local", "--dataset", "quadratic", "--topology", "complete", "--nodes", "1",
                   "--rounds", "10000000", "--no-curve", "--quiet", "--out", str(run)])
    poll(lambda: training(run, 1) or proc.poll() is not None, 60, "the cluster was not training")
    proc.kill()
    proc.wait()
    # The kernel's parent-death SIGTERM, then the reaper's SIGKILL after its grace period.
    poll(lambda: live(str(tmp_path)) == [], 20, f"processes survived: {live(str(tmp_path))}")
    stopped = json.loads((run / "stopped.json").read_text())
    assert stopped["cause"] == "launcher died"
    assert {p["name"] for p in stopped["processes"]} == {"bootstrap", "node0"}
    with claim_run_dir(run, force=True):  # the reaper held the lock until it was done; now it is free
        pass


needs_lab = pytest.mark.skipif(check_available() is not None, reason=f"no network lab: {check_available()}")


@needs_lab
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("sig", "group"), [(signal.SIGTERM, False), (signal.SIGINT, True), (signal.SIGHUP, True),
                                            (signal.SIGKILL, False)], ids=["SIGTERM", "SIGINT", "SIGHUP", "SIGKILL"])
def test_chaos_leaves_no_process_and_no_namespace(launch: Launch, tmp_path: Path, sig: signal.Signals,
                                                  group: bool) -> None:
    (tmp_path / "run.toml").write_text(RUN.format(nodes=1))
    (tmp_path / "scenario.toml").write_text(SCENARIO)
    run = tmp_path / "run"
    proc = launch(["chaos", str(tmp_path / "scenario.toml"), "--out", str(run)])
    tag = f"pn{proc.pid % 100000}"
    poll(lambda: training(run, 1) or proc.poll() is not None, 60, "the cluster was not training")
    assert len(namespaces(tag)) == 3  # the hub, the bootstrap's and the node's
    send(proc, sig, group)
    if sig == signal.SIGKILL:
        proc.wait()
        poll(lambda: live(str(tmp_path)) == [] and namespaces(tag) == [], 20,
             f"left behind: {live(str(tmp_path))}, {namespaces(tag)}")
        stopped = json.loads((run / "stopped.json").read_text())
        assert stopped["cause"] == "launcher died" and len(stopped["namespaces"]) == 3
    else:
        stopped = check_clean_stop(proc, sig, run, tmp_path)
        assert namespaces(tag) == [] and sorted(stopped["namespaces"]) == sorted(f"{tag}-{m}" for m in
                                                                                  ("boot", "hub", "n0"))
