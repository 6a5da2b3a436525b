"""Devices: `local --devices` (auto or a list, dealt out per node) and a node's `device`, checked up front."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from peernet.cli import main
from peernet.device import assign_devices
from peernet.errors import ConfigError
from peernet.node.launcher import LocalCluster, write_toml
from tests.clusters import RING8_QUADRATIC

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


def invoke(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(main, args)
    assert "Traceback" not in res.output, res.output
    return res.exit_code, res.output


def test_devices_are_dealt_out_in_turn() -> None:
    assert assign_devices("cpu", [0, 1, 2]) == {0: "cpu", 1: "cpu", 2: "cpu"}
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    expected = {i: f"cuda:{k % count}" if count else "cpu" for k, i in enumerate([5, 7, 9])}
    assert assign_devices("auto", [5, 7, 9]) == expected  # by position in the topology, not by id
    for bad in ("cpu,,cpu", "auto,cpu", "tpu"):
        with pytest.raises(ConfigError) as err:
            assign_devices(bad, [0])
        assert err.value.key == "--devices"


@NO_CUDA
def test_local_refuses_devices_and_metrics_ports_before_anything_starts(tmp_path: Path) -> None:
    out = tmp_path / "run"
    for bad, message in ((["--devices", "cuda:0"], "'cuda:0' requested but CUDA is not available on this machine"),
                         (["--devices", "cpu,cuda:1"], "'cuda:1' requested but CUDA is not available"),
                         (["--devices", "tpu"], "is not auto, cpu, cuda or cuda:N"),
                         (["--metrics-port", "65534"], "past 65535")):
        code, output = invoke(["local", "--dataset", "quadratic", "--nodes", "4", "--out", str(out), *bad])
        assert code == 2 and message in output, output
        assert not out.exists()  # nothing written, nothing started


@NO_CUDA
def test_a_node_names_its_file_and_key_for_a_missing_gpu(tmp_path: Path) -> None:
    cluster = LocalCluster.prepare(RING8_QUADRATIC, tmp_path / "run", curve=False)
    config = cluster.out / "node0.toml"
    write_toml(config, {"id": 0, "run": "run.toml", "state_dir": "nodes/node0", "device": "cuda"})
    code, output = invoke(["node", "--config", str(config)])
    assert code == 2 and f"{config}: key 'device': 'cuda' requested but CUDA is not available" in output, output
