"""Config files go through the same bounded TOML reading as topology files: a typed error, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peernet import toml_files
from peernet.config import read_toml
from peernet.errors import ConfigError, TopologyError

CASES = {
    "nested": (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "arrays or inline tables nested too deeply"),
    "not-utf8": (b"x = 1\n\xff\xfe\n", "the file is not UTF-8 text (byte 6)"),
    "huge-int": (b"x = " + b"9" * 5000 + b"\n", "an integer of more than 4,300 digits"),
    "bom": (b"\xef\xbb\xbfx = 1\n", "byte-order mark"),
    "dotted": (b"a" + b".a" * 40 + b" = 1\n", "a dotted key of more than 16 parts at line 1"),
    "syntax": (b"x = = 1\n", "invalid TOML: "),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_config_file_is_a_config_error_naming_it(tmp_path: Path, case: str) -> None:
    content, reason = CASES[case]
    path = tmp_path / "run.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        read_toml(path)
    assert type(err.value) is ConfigError and str(err.value).startswith(f"{path}: ") and reason in str(err.value)


def test_a_config_path_that_is_not_a_regular_file_is_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "run.toml"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came
    with pytest.raises(ConfigError, match="it is a FIFO"):
        read_toml(fifo)
    with pytest.raises(ConfigError, match="it is a directory"):
        read_toml(tmp_path)
    with pytest.raises(ConfigError, match="file not found"):
        read_toml(tmp_path / "missing.toml")


def test_the_size_cap_and_the_error_type_are_the_callers(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("x = 1\n#" + "-" * 592 + "\n")  # 600 bytes
    assert toml_files.read_toml(path, 600) == {"x": 1}
    with pytest.raises(TopologyError, match="more than the limit of 599"):
        toml_files.read_toml(path, 599, TopologyError)
