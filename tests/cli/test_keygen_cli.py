"""``peernet keygen``: named pairs, a whole cluster, and refusals that leave nothing behind."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner

from peernet.cli import main
from peernet.security.keys import load_public_key, load_secret_key
from tests.bootstrap import write_run


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_named_pairs(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    result = CliRunner().invoke(main, ["keygen", "node3", "bootstrap", "--dir", str(keys)])
    assert result.exit_code == 0, result.output
    assert f"wrote {keys}/node3.key_secret (secret, mode 0600)" in result.output
    assert f"wrote {keys}/bootstrap.key (public, mode 0644)" in result.output
    assert sorted(p.name for p in keys.iterdir()) == ["bootstrap.key", "bootstrap.key_secret", "node3.key",
                                                       "node3.key_secret"]
    assert mode(keys / "node3.key") == 0o644 and mode(keys / "node3.key_secret") == 0o600
    assert load_secret_key(keys / "node3.key_secret")[0] == load_public_key(keys / "node3.key")
    before = (keys / "node3.key_secret").read_bytes()

    refused = CliRunner().invoke(main, ["keygen", "operator", "node3", "--dir", str(keys)])
    assert refused.exit_code == 2
    assert "node3.key" in refused.output and "already exist" in refused.output and "--force" in refused.output
    assert not (keys / "operator.key").exists() and (keys / "node3.key_secret").read_bytes() == before

    forced = CliRunner().invoke(main, ["keygen", "operator", "node3", "--dir", str(keys), "--force"])
    assert forced.exit_code == 0 and (keys / "node3.key_secret").read_bytes() != before
    assert (keys / "operator.key").exists()


def test_usage_errors(tmp_path: Path) -> None:
    for args, message in ((["keygen"], "give one or more NAMEs"), (["keygen", "a"], "--dir DIR is required"),
                          (["keygen", "a", "--cluster", str(tmp_path)], "--cluster takes no NAMEs"),
                          (["keygen", "../a", "--dir", str(tmp_path)], "key name '../a'")):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert list(tmp_path.iterdir()) == []


def test_cluster_is_idempotent(tmp_path: Path) -> None:
    write_run(tmp_path, n=2)
    first = CliRunner().invoke(main, ["keygen", "--cluster", str(tmp_path)])
    assert first.exit_code == 0, first.output
    assert "created node0, node1, bootstrap, operator; kept 0 existing pair(s)" in first.output
    keys = {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()}
    assert len(keys) == 8 and all(mode(tmp_path / "keys" / n) == 0o600 for n in keys if n.endswith("_secret"))
    again = CliRunner().invoke(main, ["keygen", "--cluster", str(tmp_path)])
    assert again.exit_code == 0 and "created nothing new; kept 4 existing pair(s)" in again.output
    assert {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()} == keys
    forced = CliRunner().invoke(main, ["keygen", "--cluster", str(tmp_path), "--force"])
    assert forced.exit_code == 0
    assert (tmp_path / "keys" / "node0.key_secret").read_bytes() != keys["node0.key_secret"]
    missing = CliRunner().invoke(main, ["keygen", "--cluster", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no run.toml here" in missing.output
