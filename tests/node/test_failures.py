"""A failed process is reported with the line of its log that says why, not only its exit status."""

from __future__ import annotations

from pathlib import Path

import pytest

from peernet.cli.local_cmd import _finish
from peernet.config import RunSettings, resolve_topology
from peernet.errors import LaunchError
from peernet.node.failures import describe_failures, first_error_line
from peernet.node.launcher import LocalCluster

TRACEBACK = """2026-12-05 07:46:28,739 node1 INFO round 5/10 loss 0.1
Traceback (most recent call last):
  File "x.py", line 1, in <module>
    boom()
RuntimeError: boom
"""


@pytest.mark.parametrize(("text", "line"), [
    ("bootstrap listening on x\nerror: dataset 'mnist' not found (tried /x)\n", "dataset 'mnist' not found (tried /x)"),
    ("2026-12-05 07:46:28,739 node3 WARNING w\n2026-12-05 07:46:29,000 node3 ERROR loss is nan at round 7\n"
     "error: node 3: bootstrap rejected registration: no\n", "node 3: bootstrap rejected registration: no"),
    ("2026-12-05 07:46:28,739 peernet.bootstrap ERROR internal error\n", "internal error"),
    (TRACEBACK, "RuntimeError: boom"),
    ("all is well\n", None),
])
def test_first_error_line(tmp_path: Path, text: str, line: str | None) -> None:
    log = tmp_path / "node.log"
    log.write_text(text)
    assert first_error_line(log) == line
    assert first_error_line(tmp_path / "missing.log") is None


def test_nodes_that_fail_alike_share_a_line(tmp_path: Path) -> None:
    for i, text in enumerate(["error: bad data\n", "error: bad data\n", TRACEBACK]):
        (tmp_path / f"node{i}.log").write_text(text)
    failed = {f"node {i}": (2 if i < 2 else -9, tmp_path / f"node{i}.log") for i in range(3)}
    assert describe_failures(failed) == (
        f"node 0, node 1 (exit 2): bad data; see {tmp_path}/node0.log, {tmp_path}/node1.log; "
        f"node 2 (exit -9): RuntimeError: boom; see {tmp_path}/node2.log")


def test_local_names_the_failed_node_and_its_error_not_the_ones_it_stopped(tmp_path: Path) -> None:
    settings = RunSettings(dataset="quadratic", nodes=3, rounds=5)
    cluster = LocalCluster(out=tmp_path, settings=settings, topology=resolve_topology(settings), node_options={})
    (tmp_path / "node1.log").write_text("error: node 1: checkpoint is corrupt\n")
    with pytest.raises(LaunchError) as err:
        _finish(settings, cluster, {0: None, 1: 2, 2: None}, 1.0)
    assert str(err.value) == f"failed: node 1 (exit 2): node 1: checkpoint is corrupt; see {tmp_path}/node1.log"
