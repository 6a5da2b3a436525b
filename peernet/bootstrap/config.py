"""The bootstrap's own settings (``bootstrap.toml``) as a frozen dataclass that rejects unknown keys."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from peernet.config import bounds, check_fields, from_mapping, read_toml
from peernet.errors import ConfigError
from peernet.metrics.prometheus import parse_listen

# tcp://host:port (port may be '*' or 0 to let the OS pick), ipc://path or inproc://name.
_LISTEN = re.compile(r"(tcp://[^\s:]+:(\*|\d{1,5}))|((ipc|inproc)://\S+)")
REGISTRY_FILE = "registry.sqlite3"


@dataclass(frozen=True)
class BootstrapConfig:
    """Where the bootstrap listens, which run it serves and where it keeps its registry."""

    listen: str = field(default="tcp://127.0.0.1:5550", metadata={"help": "ZeroMQ bind address"})
    run: str = field(default="run.toml", metadata={"help": "shared run settings file (its topology key names "
                                                          "the topology)"})
    state_dir: str = field(default="state/bootstrap", metadata={"help": "directory of registry.sqlite3"})
    node_ttl: float = field(default=15.0, metadata=bounds(gt=0, finite=True)
                            | {"help": "seconds without a heartbeat after which a node "
                                                           "is no longer live"})
    max_nodes: int = field(default=1024, metadata=bounds(ge=1) | {"help": "bound on registrations"})
    secret_key: str | None = field(default=None, metadata={"help": "CURVE secret key file (mode 0600, from "
                                   "`peernet keygen`); relative to this file. Set: only the topology's node keys "
                                   "and client_keys_files may connect"})
    client_keys_files: list[str] = field(default_factory=list, metadata={"help": "public key files of further "
                                         "clients allowed to connect (with secret_key), e.g. the operator key "
                                         "for `peernet status`; relative to this file"})
    metrics_listen: str | None = field(default=None, metadata={"help": "HOST:PORT to serve Prometheus metrics on "
                                       "(http://HOST:PORT/metrics; port 0: a free one, written to state_dir/"
                                       "metrics_url); absent: none (docs/bootstrap.md, Metrics)"})

    def __post_init__(self) -> None:
        if not _LISTEN.fullmatch(self.listen):
            raise ConfigError(f"expected an address like 'tcp://127.0.0.1:5550' (port '*' or 0 picks a free "
                              f"port), got {self.listen!r}", key="listen")
        check_fields(self)
        if self.metrics_listen is not None:
            parse_listen(self.metrics_listen)
        if self.client_keys_files and self.secret_key is None:
            raise ConfigError("client keys only mean something with CURVE: set secret_key too", key="secret_key")

    @property
    def registry_path(self) -> Path:
        return Path(self.state_dir) / REGISTRY_FILE


def load_bootstrap_config(path: str | Path, overrides: dict[str, Any] | None = None) -> BootstrapConfig:
    """Read ``bootstrap.toml``; its paths (run, state_dir, key files) are relative to the file, not to the cwd."""
    data = read_toml(path)
    merged = {**data, **(overrides or {})}
    config = from_mapping(BootstrapConfig, merged, source=str(path))
    base = Path(path).parent  # joining an absolute path keeps it as is
    secret = None if config.secret_key is None else str(base / config.secret_key)
    return replace(config, run=str(base / config.run), state_dir=str(base / config.state_dir), secret_key=secret,
                   client_keys_files=[str(base / name) for name in config.client_keys_files])
