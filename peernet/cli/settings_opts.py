"""Click options generated from RunSettings, so `simulate` and `local` expose exactly the config keys."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

import click

from peernet.config import RunSettings, from_mapping, load_run_settings

_SCALARS: dict[Any, Any] = {int: int, float: float, str: str}


def _click_type(annotation: Any, choices: tuple[str, ...] | None) -> Any:
    if choices:
        return click.Choice(choices)
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return _SCALARS[args[0]]


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--config FILE`` and one ``--key`` option per RunSettings field (default: from config/defaults)."""
    hints = typing.get_type_hints(RunSettings)
    for f in reversed(dataclasses.fields(RunSettings)):
        default = f.default
        help_text = f.metadata.get("help", "")
        if default is not None:
            help_text += f" [default: {default}]"
        opt = click.option(f"--{f.name.replace('_', '-')}", f.name, default=None,
                           type=_click_type(hints[f.name], f.metadata.get("choices")), help=help_text)
        func = opt(func)
    func = click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                        help="TOML file with the same settings (keys as the option names, with _ or -); "
                             "options given on the command line override it")(func)
    return func


def pop_settings(kwargs: dict[str, Any]) -> RunSettings:
    """Remove the settings options from ``kwargs`` and build RunSettings (config file, then options)."""
    config_file = kwargs.pop("config_file", None)
    given = {}
    for f in dataclasses.fields(RunSettings):
        value = kwargs.pop(f.name, None)
        if value is not None:
            given[f.name] = value
    if config_file:
        return load_run_settings(config_file, given)
    return from_mapping(RunSettings, given, source="command line")
