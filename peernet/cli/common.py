"""Helpers shared by the CLI commands: error reporting and the ``--log-level`` option."""

from __future__ import annotations

import contextlib
import functools
import logging
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


LOG_LEVELS = ("debug", "info", "warning", "error")
#: Where ``--log-level`` leaves its value in the click context, for commands that set up logging themselves.
_META_KEY = "peernet.log_level"


def log_level_option(*, own: bool = False, default: str = "warning") -> Callable[[F], F]:
    """``--log-level LEVEL`` for a command: from its parsing to the command's end, log records of LEVEL and above
    go to stderr (logging is as before afterwards, so embedding or testing a command leaves no handler behind).
    ``own``: the command sets up logging itself (a node, the bootstrap, chaos) and reads the level with
    :func:`given_log_level`; ``default`` is what the help says applies without the option."""

    def remember(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        ctx.meta[_META_KEY] = value
        if not own:
            _log_to_stderr(ctx, value)
        return value

    return click.option("--log-level", type=click.Choice(LOG_LEVELS), default=None, expose_value=False,
                        callback=remember, help=f"stderr log level [default: {default}]")


def given_log_level() -> str | None:
    """The ``--log-level`` given to the running command, or None."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None else ctx.meta.get(_META_KEY)


def _log_to_stderr(ctx: click.Context, level: str) -> None:
    # The level is peernet's own (a debug level must not open the flood gates of matplotlib or asyncio); the
    # handler is the root's, so records of other libraries at warning and above show too, as they would anyway.
    root, ours = logging.getLogger(), logging.getLogger("peernet")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    previous = ours.level
    root.addHandler(handler)
    ours.setLevel(level.upper())

    def restore() -> None:
        root.removeHandler(handler)
        ours.setLevel(previous)

    ctx.call_on_close(restore)
