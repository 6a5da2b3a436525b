"""Shared fixtures: clusters of real processes and in-process clusters, each always ended after its test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peernet.config import RunSettings
from peernet.node.inproc import InProcessCluster
from peernet.node.launcher import LocalCluster
from tests.clusters import FAST


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """``make_cluster(settings, **node_options)`` prepares a run directory; every process is stopped at the end.

    Clusters run with CURVE, as `peernet local` does, unless ``curve=False``.
    """
    made: list[LocalCluster] = []

    def factory(settings: RunSettings, name: str = "run", curve: bool = True, **node_options: Any) -> LocalCluster:
        options = {"checkpoint_every": 5, "deadline_ceiling": 10.0, "bootstrap_timeout": 1.0, **node_options}
        cluster = LocalCluster.prepare(settings, tmp_path / name, options, curve=curve)
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        cluster.stop()


@pytest.fixture
def make_inproc(tmp_path: Path) -> Iterator[Callable[..., InProcessCluster]]:
    """``make_inproc(settings, per_node=..., **node_options)``: an in-process cluster with sub-second deadlines
    (tests.clusters.FAST, overridable); every daemon thread and the bootstrap are stopped at the end."""
    made: list[InProcessCluster] = []

    def factory(settings: RunSettings, name: str = "run", per_node: dict[int, dict[str, Any]] | None = None,
                **node_options: Any) -> InProcessCluster:
        cluster = InProcessCluster(settings, tmp_path / name, {**FAST, **node_options}, per_node=per_node)
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        cluster.stop()
