"""Checkpoint files: a write cut short leaves only a temporary file, which the next start removes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peernet.node.checkpoint import (
    Checkpoint,
    clear_stale_temp_files,
    load_checkpoint,
    save_checkpoint,
    stale_temp_files,
)


def test_a_write_killed_midway_leaves_the_old_checkpoint_and_a_temp_file_that_is_cleared(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = Checkpoint(node_id=1, run="r", round=4, params=torch.ones(3), state={}, extra={})
    save_checkpoint(tmp_path, old)

    def die(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # stands for the kill: the write stops after the temporary file was made

    monkeypatch.setattr("peernet.atomic.os.replace", die)
    monkeypatch.setattr("peernet.atomic.Path.unlink", lambda self, missing_ok=False: None)  # no cleanup: killed
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, Checkpoint(node_id=1, run="r", round=6, params=torch.zeros(3), state={}, extra={}))
    monkeypatch.undo()
    assert len(stale_temp_files(tmp_path)) == 1  # what a SIGKILL during the write leaves
    loaded = load_checkpoint(tmp_path, node_id=1, run="r")
    assert loaded is not None and loaded.round == 4 and torch.equal(loaded.params, torch.ones(3))
    assert clear_stale_temp_files(tmp_path) == 1 and stale_temp_files(tmp_path) == []
