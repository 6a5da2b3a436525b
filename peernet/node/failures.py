"""Why a process of a local cluster failed, read from its log, so the launcher can say it instead of an exit code."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from peernet.errors import escaped

#: How much of the end of a log is searched: a node that failed late has logged its rounds before the error.
TAIL_BYTES = 1 << 20
#: A logging line of the node or the bootstrap at ERROR or CRITICAL ("<date> <time> [node3 |name ]ERROR msg").
_LOGGED = re.compile(r"^\S+ \S+ (?:\S+ )?(?:ERROR|CRITICAL) (?P<message>.*)$")


def first_error_line(log: Path) -> str | None:
    """The line of a process log that says why it failed, or None: the CLI's ``error: ...`` line (reports_errors),
    else the first ERROR or CRITICAL log record, else the exception line that ends the first traceback."""
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - TAIL_BYTES))
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("error: "):
            return _brief(line[len("error: "):])
    for line in lines:
        logged = _LOGGED.match(line)
        if logged:
            return _brief(logged["message"])
    if "Traceback (most recent call last):" in lines:
        after = lines[lines.index("Traceback (most recent call last):") + 1:]
        # The exception line is the first one after the frames that is not indented.
        return next((_brief(line) for line in after if line and not line[0].isspace()), None)
    return None


def _brief(line: str) -> str:
    return escaped(line.strip(), 400)


def describe_failures(failed: Mapping[str, tuple[int | None, Path]]) -> str:
    """One line for processes that failed, ``{name: (exit status, log)}``: nodes with the same error share it,
    e.g. ``node 0, node 1 (exit 2): dataset 'mnist' not found (...); see r/node0.log, r/node1.log``."""
    groups: dict[str | None, list[str]] = {}
    for name, (_, log) in failed.items():
        groups.setdefault(first_error_line(log), []).append(name)
    parts = []
    for line, names in groups.items():
        codes = sorted({str(failed[n][0]) for n in names})
        logs = ", ".join(str(failed[n][1]) for n in names)
        parts.append(f"{', '.join(names)} (exit {', '.join(codes)}): {line or 'no error in its log'}; see {logs}")
    return "; ".join(parts)
