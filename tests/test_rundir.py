"""Run directories: claimed under a lock before anything is written, never mixed with an old run's files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from peernet import __version__
from peernet.config import RunSettings
from peernet.errors import RunDirError
from peernet.rundir import (
    DIGESTED_UNLESS_DEFAULT,
    DIGESTED_WHEN_SET,
    LOCK_NAME,
    claim_run_dir,
    resolved_settings,
    run_record,
    settings_digest,
)


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every path under ``root`` with its mtime and content: any change shows."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


def test_a_directory_with_files_is_refused_untouched(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{}")
    before = tree(tmp_path)
    with pytest.raises(RunDirError, match=r"is not empty \(summary\.json\).*--force"), claim_run_dir(tmp_path):
        pass
    assert tree(tmp_path) == before  # not even a lock file


def test_a_held_directory_is_refused_with_its_holder_even_with_force(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with claim_run_dir(run):
        (run / "run.toml").write_text("")
        before = tree(run)
        for force in (False, True):
            with pytest.raises(RunDirError, match=f"in use by another run .pid {os.getpid()} on "), \
                    claim_run_dir(run, force=force):
                pass
        assert tree(run) == before


def test_force_empties_a_run_directory_and_only_that(tmp_path: Path) -> None:
    old = tmp_path / "old"
    (old / "nodes" / "node5").mkdir(parents=True)
    (old / "nodes" / "node5" / "metrics.jsonl").write_text("{}\n")
    (old / "summary.json").write_text("{}")
    with claim_run_dir(old, force=True):
        assert sorted(p.name for p in old.iterdir()) == [LOCK_NAME]
    other = tmp_path / "home"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="does not look like a peernet run directory"), \
            claim_run_dir(other, force=True):
        pass
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_a_block_that_fails_before_writing_leaves_no_trace(tmp_path: Path) -> None:
    new = tmp_path / "a" / "new"
    with pytest.raises(KeyboardInterrupt), claim_run_dir(new):
        raise KeyboardInterrupt
    assert not new.exists()
    with pytest.raises(ValueError), claim_run_dir(tmp_path / "a"):
        raise ValueError
    assert list((tmp_path / "a").iterdir()) == []


def test_resume_keeps_what_is_there_but_still_locks(tmp_path: Path) -> None:
    (tmp_path / "cells").mkdir()
    with claim_run_dir(tmp_path, resume=True):
        assert (tmp_path / "cells").is_dir()
        with pytest.raises(RunDirError, match="in use"), claim_run_dir(tmp_path, resume=True):
            pass
    with pytest.raises(RunDirError, match="give one of them"), claim_run_dir(tmp_path, force=True, resume=True):
        pass


def test_settings_record_holds_resolved_values_version_and_commit() -> None:
    settings = RunSettings(dataset="quadratic", topology="ring", nodes=5)
    record = run_record(settings, nodes=5)
    assert record["lr"] == 0.05 and record["dtype"] == "float64" and record["nodes"] == 5
    assert record["peernet_version"] == __version__
    assert record["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", record["git_commit"])
    assert record["settings_digest"] == settings_digest(settings)
    # The digest is about what the run computes: an explicit default step size, another data directory or the
    # topology named as a file do not change it; the seed does.
    same = dataclasses.replace(settings, lr=0.05, data_dir="/elsewhere", topology="topology.toml", nodes=8)
    assert settings_digest(same) == record["settings_digest"]
    assert settings_digest(dataclasses.replace(settings, seed=1)) != record["settings_digest"]


def test_clipping_enters_the_digest_and_fingerprint_only_when_set() -> None:
    """Results and checkpoints of runs before ClippedGossip existed stay current; a clipped run is another run."""
    settings = RunSettings(dataset="quadratic")
    before = {k: v for k, v in resolved_settings(settings).items()
              if k not in ("data_dir", "topology", "nodes", *DIGESTED_WHEN_SET, *DIGESTED_UNLESS_DEFAULT)}
    assert settings_digest(settings) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    for key in DIGESTED_WHEN_SET:
        clipped = dataclasses.replace(settings, **{key: 1.0})
        assert settings_digest(clipped) != settings_digest(settings)
        assert clipped.fingerprint() != settings.fingerprint()
