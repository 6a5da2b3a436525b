"""Which torch device a simulator or daemon runs on: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked up front."""

from __future__ import annotations

import re
from collections.abc import Sequence

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


def assign_devices(spec: str, ids: Sequence[int], key: str = "--devices") -> dict[int, str]:
    """Each node's ``device`` (node ids in topology order) for ``spec``: ``auto`` puts the k-th node on
    ``cuda:(k mod count)`` when CUDA is present, else on the CPU; a comma list (cpu, cuda, cuda:N) is dealt out
    in turn. Every entry is checked here, so a CUDA device that is not there is a ConfigError naming ``key``
    before any process starts."""
    if spec.strip() == "auto":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return {i: f"cuda:{k % count}" if count else "cpu" for k, i in enumerate(ids)}
    names = [name.strip() for name in spec.split(",")]
    for name in names:
        if name in ("", "auto"):
            raise ConfigError(f"{spec!r}: give auto alone, or a comma list of cpu, cuda and cuda:N", key=key)
        resolve_device(name, key)
    return {i: names[k % len(names)] for k, i in enumerate(ids)}


def check_device(name: str, config_file: str) -> None:
    """A node config's ``device`` as :func:`resolve_device` takes it; its ConfigError names ``config_file`` too."""
    try:
        resolve_device(name)
    except ConfigError as exc:
        raise ConfigError(exc.reason, file=config_file, key="device") from None
