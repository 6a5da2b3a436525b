"""The one atomic-write helper: mode before the first byte, nothing left behind on failure, old file kept."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from peernet.atomic import write_atomic


def test_text_bytes_and_writer_functions_land_whole(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a.txt", "héllo\n")
    write_atomic(tmp_path / "b.bin", b"\x00\x01")
    write_atomic(tmp_path / "c.bin", lambda fh: fh.write(b"abc"))
    assert (tmp_path / "a.txt").read_text() == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "c.bin").read_bytes() == b"abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.bin"]


def test_the_mode_is_set_before_any_byte_is_written(tmp_path: Path) -> None:
    seen = []

    def writer(fh: object) -> None:
        # The temporary file already exists with its final mode while the first bytes are being written.
        (tmp,) = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        seen.append(stat.S_IMODE(os.stat(tmp).st_mode))
        fh.write(b"secret")  # type: ignore[attr-defined]

    old = os.umask(0)
    try:
        write_atomic(tmp_path / "key", writer, mode=0o600)
        write_atomic(tmp_path / "pub", b"public", mode=0o644)
    finally:
        os.umask(old)
    assert seen == [0o600]
    assert stat.S_IMODE(os.stat(tmp_path / "key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "pub").st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")

    def fails(fh: object) -> None:
        fh.write(b"half")  # type: ignore[attr-defined]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, fails)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
