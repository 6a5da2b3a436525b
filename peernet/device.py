"""Which torch device a simulator or daemon runs on: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked up front."""

from __future__ import annotations

import re

import torch

from peernet.errors import ConfigError

_CUDA = re.compile(r"cuda(:\d+)?")


def resolve_device(name: str, key: str = "device") -> torch.device:
    """The device ``name`` means here; ``auto`` is CUDA when present. A CUDA device that is not there is a
    ConfigError naming ``key`` (the option or config key), not a traceback from deep inside torch.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not isinstance(name, str) or not _CUDA.fullmatch(name):
        raise ConfigError(f"{name!r} is not auto, cpu, cuda or cuda:N", key=key)
    if not torch.cuda.is_available():
        raise ConfigError(f"{name!r} requested but CUDA is not available on this machine (use cpu or auto)",
                          key=key)
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"{name!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)",
                          key=key)
    return torch.device(name)
