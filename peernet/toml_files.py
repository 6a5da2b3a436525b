"""User TOML files read in bounded time and memory: regular files only, a size cap, UTF-8, bounded keys and nesting."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from peernet.atomic import read_bounded
from peernet.errors import ConfigError, escaped

#: The most parts a dotted key (``a.b.c``) may have: no peernet file needs more than a few, and tomllib takes
#: time and memory quadratic in them (40,000 parts: 20 s and 6 GB).
MAX_KEY_PARTS = 16
_SEGMENT = r"""(?:[A-Za-z0-9_-]++|"(?:[^"\\\n]|\\.)*+"|'[^'\n]*+')"""
# Linear time: a match starts only at a segment's first character (the look-behind), and nothing backtracks.
_SEGMENT_START = r"""(?<![A-Za-z0-9_\-"'\\])"""
_DOTTED_KEY = re.compile(rf"{_SEGMENT_START}(?:{_SEGMENT}[ \t]*+\.[ \t]*+){{{MAX_KEY_PARTS}}}{_SEGMENT}")


def read_toml_text(path: str | Path, limit: int, error: type[ConfigError] = ConfigError) -> str:
    """The text of a TOML file about to be parsed: a regular file of at most ``limit`` bytes (checked before
    reading), UTF-8 without a byte-order mark, without dotted keys of more than MAX_KEY_PARTS parts. Every
    defect raises ``error`` naming the file."""
    source = str(path)
    try:
        raw = read_bounded(path, limit)
    except FileNotFoundError:
        raise error("file not found", file=source) from None
    except OSError as exc:
        raise error(f"cannot read file: {exc.strerror or exc}", file=source) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"invalid TOML: the file is not UTF-8 text (byte {exc.start:,})", file=source) from None
    if text.startswith("\ufeff"):
        raise error("invalid TOML: the file starts with a byte-order mark (BOM), which TOML does not allow; "
                    "save it as UTF-8 without one", file=source)
    deep = _DOTTED_KEY.search(text)
    if deep is not None:
        line = text.count("\n", 0, deep.start()) + 1
        raise error(f"invalid TOML: a dotted key of more than {MAX_KEY_PARTS} parts at line {line} (no peernet "
                    "file needs that many)", file=source)
    return text


def parse_toml(text: str, source: str, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """``tomllib.loads(text)``, every failure an ``error`` naming ``source`` (never a traceback)."""
    try:
        return tomllib.loads(text)
    except RecursionError:  # tomllib recurses once per level of nested arrays and inline tables
        raise error("invalid TOML: arrays or inline tables nested too deeply", file=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"invalid TOML: {escaped(str(exc), 160)}", file=source) from None
    except ValueError:  # tomllib lets int() refuse a literal of more than 4,300 digits (CVE-2020-10735)
        raise error("invalid TOML: a value cannot be read (an integer of more than 4,300 digits?)",
                    file=source) from None


def read_toml(path: str | Path, limit: int, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """Read and parse a TOML file with the checks of ``read_toml_text`` and ``parse_toml``."""
    return parse_toml(read_toml_text(path, limit, error), str(path), error)
