"""Tests for ``peernet topology generate`` and ``peernet topology check`` through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from peernet.cli.topology_cmd import topology_group
from peernet.security.keys import create_keypairs, load_public_key
from peernet.topology_files import load_topology


def test_generate_then_check(tmp_path: Path) -> None:
    out = tmp_path / "ring.toml"
    runner = CliRunner()
    gen = runner.invoke(topology_group, ["generate", "ring", "--nodes", "8", "-o", str(out)])
    assert gen.exit_code == 0, gen.output
    assert gen.output.count("\n") == 1 and "ring-8" in gen.output and "0.1953" in gen.output
    assert load_topology(out).n == 8

    check = runner.invoke(topology_group, ["check", str(out)])
    assert check.exit_code == 0, check.output
    lines = dict(line.split(":", 1) for line in check.output.strip().splitlines())
    assert {k: v.strip() for k, v in lines.items()} | {"fingerprint": ""} == {
        "name": "ring-8",
        "nodes": "8",
        "edges": "8",
        "weights": "metropolis-hastings",
        "degree range": "2-2",
        "diameter": "4",
        "spectral gap": "0.1953",
        "fingerprint": "",
    }


def test_check_json(tmp_path: Path) -> None:
    out = tmp_path / "h.toml"
    runner = CliRunner()
    args = ["generate", "hypercube", "-n", "8", "--weights", "uniform", "-o", str(out)]
    assert runner.invoke(topology_group, args).exit_code == 0
    result = runner.invoke(topology_group, ["check", "--json", str(out)])
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["nodes"] == 8 and info["edges"] == 12 and info["degree_range"] == [3, 3]
    assert info["weights"] == "uniform" and info["diameter"] == 3 and abs(info["spectral_gap"] - 0.5) < 1e-12
    assert info["fingerprint"] == load_topology(out).fingerprint()


def test_check_invalid_file_reports_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("edges = [[0, 1], [1, 9]]\n[[nodes]]\nid = 0\n[[nodes]]\nid = 1\n")
    result = CliRunner().invoke(topology_group, ["check", str(bad)])
    assert result.exit_code == 2
    assert "error:" in result.output and "edge [1, 9] names unknown node 9" in result.output
    assert "Traceback" not in result.output


def test_check_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(topology_group, ["check", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "file not found" in result.output


def test_generate_rejects_bad_size_without_traceback(tmp_path: Path) -> None:
    out = tmp_path / "t.toml"
    result = CliRunner().invoke(topology_group, ["generate", "torus", "-n", "7", "-o", str(out)])
    assert result.exit_code == 2 and "error: torus: 7 nodes cannot be arranged" in result.output
    assert not out.exists()


def test_every_option_has_help() -> None:
    for name, command in topology_group.commands.items():
        for param in command.params:
            if param.param_type_name == "option":
                assert getattr(param, "help", None), f"{name} {param.name} has no help"


def test_generate_with_keys_writes_them_inline(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    create_keypairs(keys, ["node0", "node1", "node2"])
    out = tmp_path / "ring.toml"
    result = CliRunner().invoke(topology_group, ["generate", "ring", "-n", "3", "--keys", str(keys), "-o", str(out)])
    assert result.exit_code == 0, result.output
    topo = load_topology(out)
    assert {s.id: s.public_key for s in topo.nodes} == {
        i: load_public_key(keys / f"node{i}.key").decode() for i in range(3)}
    assert "public_key_file" not in out.read_text()  # inline: a host needs no other node's key file
    again = tmp_path / "again.toml"
    assert CliRunner().invoke(topology_group, ["generate", "ring", "-n", "3", "--keys", str(keys),
                                               "-o", str(again)]).exit_code == 0
    assert again.read_bytes() == out.read_bytes()  # same keys, same file: a deployment can compare them


def test_generate_with_keys_refuses_a_missing_or_shared_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    create_keypairs(keys, ["node0", "node1"])
    out = tmp_path / "ring.toml"
    result = CliRunner().invoke(topology_group, ["generate", "ring", "-n", "3", "--keys", str(keys), "-o", str(out)])
    assert result.exit_code == 2 and "node2.key" in result.output and "Traceback" not in result.output
    assert not out.exists()
    (keys / "node2.key").write_bytes((keys / "node0.key").read_bytes())
    result = CliRunner().invoke(topology_group, ["generate", "ring", "-n", "3", "--keys", str(keys), "-o", str(out)])
    assert result.exit_code == 2 and "same public_key" in result.output
    assert not out.exists()


def test_check_of_a_large_random_graph_reports_labelled_diameter_bounds(tmp_path: Path) -> None:
    # 10,000 nodes: the exact diameter search of a graph with no symmetry runs out of budget; the command
    # must still succeed and say "bounds", never print one of them as if it were the diameter.
    out = tmp_path / "r.toml"
    runner = CliRunner()
    assert runner.invoke(topology_group, ["generate", "random", "-n", "10000", "-o", str(out)]).exit_code == 0
    result = runner.invoke(topology_group, ["check", "--json", str(out)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    lower, upper = info["diameter_bounds"]
    assert 2 <= lower <= upper
    assert info["diameter"] == (lower if lower == upper else None)
    text = runner.invoke(topology_group, ["check", str(out)]).output
    assert ("bounds" in text) == (lower != upper)


def test_a_run_asking_for_a_graph_too_large_is_refused_with_the_setting() -> None:
    from peernet.config import RunSettings, resolve_topology
    from peernet.errors import TopologyError

    with pytest.raises(TopologyError) as err:
        resolve_topology(RunSettings(dataset="quadratic", topology="complete", nodes=100_000))
    assert err.value.key == "nodes" and "4,999,950,000 edges" in str(err.value) and "nodes = 100000" in str(err.value)
