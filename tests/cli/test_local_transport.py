"""`peernet local --transport`: ipc sockets in the run directory, TCP when the path cannot be a socket path."""

from __future__ import annotations

from pathlib import Path

import pytest

from peernet.cli.local_cmd import ipc_endpoints
from peernet.core.topology_limits import endpoint_problem
from peernet.errors import LaunchError


def test_ipc_endpoints_live_in_the_run_directory(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()  # claimed (created and locked) before the endpoints are chosen
    endpoints = ipc_endpoints(tmp_path / "run", [0, 1])
    assert endpoints == {i: f"ipc://{(tmp_path / 'run' / 'sockets').resolve()}/node{i}.sock" for i in (0, 1)}
    assert all(endpoint_problem(e) is None for e in endpoints.values())
    assert (tmp_path / "run" / "sockets").is_dir()


def test_a_path_too_long_for_a_socket_falls_back_to_tcp_unless_ipc_was_asked_for(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    assert ipc_endpoints(deep, [0], required=False) == {}
    assert not (deep / "sockets").exists()
    with pytest.raises(LaunchError, match="shorter path"):
        ipc_endpoints(deep, [0], required=True)


def test_the_socket_directory_is_private(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    ipc_endpoints(tmp_path / "run", [0])
    assert (tmp_path / "run" / "sockets").stat().st_mode & 0o777 == 0o700
