"""Tests for `peernet data describe` (imported directly, not through the top-level CLI)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from peernet.cli.data_cmd import data_group

BASE = ["describe", "--dataset", "fashion-mnist", "--nodes", "8"]


def test_describe_classes_table() -> None:
    result = CliRunner().invoke(data_group, [*BASE, "--partition", "classes", "--classes-per-node", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("fashion-mnist: 8 nodes, partition classes (k=2)")
    assert lines[1].split() == ["node", "samples", *(str(c) for c in range(10))]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == [*(str(i) for i in range(8)), "total"]
    for row in rows[:-1]:
        counts = [int(v) for v in row[2:]]
        assert sum(1 for v in counts if v) == 2 and sum(counts) == int(row[1])
    assert int(rows[-1][1]) == sum(int(r[1]) for r in rows[:-1])


def test_describe_json_with_validation() -> None:
    options = ["--partition", "dirichlet", "--alpha", "0.5", "--seed", "3", "--val-fraction", "0.1", "--json"]
    args = [*BASE, *options]
    result = CliRunner().invoke(data_group, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["validation_samples"] == 6000 and report["test_samples"] == 10000
    assert len(report["per_node"]) == 8 and report["alpha"] == 0.5
    assert sum(n["samples"] for n in report["per_node"]) == report["used_samples"] == 54000
    assert all(n["samples"] == sum(n["class_counts"]) for n in report["per_node"])


def test_describe_reports_config_error() -> None:
    result = CliRunner().invoke(data_group, [*BASE, "--partition", "classes", "--classes-per-node", "11"])
    assert result.exit_code == 2
    assert "error:" in result.output and "classes per node" in result.output


def test_describe_missing_data(tmp_path: Path) -> None:
    where = ["--dataset", "mnist", "--data-dir", str(tmp_path)]
    args = ["describe", *where, "--nodes", "2", "--partition", "iid"]
    result = CliRunner().invoke(data_group, args)
    assert result.exit_code == 2 and "PEERNET_DATA" in result.output


def test_every_option_has_help() -> None:
    describe = data_group.commands["describe"]
    assert all(getattr(p, "help", None) for p in describe.params)
