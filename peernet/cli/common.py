"""Helpers shared by the CLI commands: error reporting and torch thread defaults."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from peernet.errors import Interrupted, PeernetError

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(func: F) -> F:
    """Turn a PeernetError into a one-line message on stderr and exit status 2, and a stop signal turned into
    Interrupted (peernet/interrupts.py) into one line and exit status 128 + its number, as a shell reports it.

    Users see the file, key and reason instead of a traceback; unexpected exceptions still show one.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PeernetError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except Interrupted as exc:
            with contextlib.suppress(OSError):  # SIGHUP: the terminal may be gone; the exit status still tells
                click.echo(f"stopped by {exc.signame}" + (f": {exc.summary}" if exc.summary else ""), err=True)
            sys.exit(128 + exc.signum)

    return wrapper  # type: ignore[return-value]
