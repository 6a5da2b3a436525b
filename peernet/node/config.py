"""Node daemon configuration (one TOML file per node) parsed into a frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from peernet.config import from_mapping, read_toml
from peernet.errors import ConfigError


@dataclass(frozen=True)
class NodeConfig:
    """One node: who it is, where it listens, which run it belongs to, where it keeps its state."""

    id: int = field(metadata={"help": "this node's id in the topology"})
    run: str = field(metadata={"help": "shared run settings file (RunSettings TOML); relative to this file"})
    listen: str = field(default="tcp://127.0.0.1:*", metadata={"help": "ROUTER bind address; port * picks a "
                        "free one"})
    advertise: str | None = field(default=None, metadata={"help": "host:port or tcp:// endpoint neighbours "
                                  "connect to (default: the bound endpoint)"})
    bootstrap: str = field(default="tcp://127.0.0.1:5550", metadata={"help": "bootstrap service address"})
    state_dir: str = field(default="state", metadata={"help": "checkpoints, metrics and logs; relative to "
                           "this file"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when available, else CPU), cpu, cuda, "
                        "cuda:N"})
    threads: int = field(default=1, metadata={"help": "torch intra-op threads (several nodes share a host)"})
    checkpoint_every: int = field(default=20, metadata={"help": "write a checkpoint every N rounds (0: only "
                                  "at exit)"})
    round_timeout: float = field(default=30.0, metadata={"help": "seconds without a neighbour's message "
                                 "before the node logs a warning (it keeps waiting and stays interruptible)"})
    start_timeout: float = field(default=300.0, metadata={"help": "seconds to wait for every node to register"})
    bootstrap_timeout: float = field(default=2.0, metadata={"help": "seconds per bootstrap request try"})
    bootstrap_retries: int = field(default=3, metadata={"help": "tries per bootstrap request"})
    heartbeat_every: float = field(default=1.0, metadata={"help": "seconds between status reports to the "
                                   "bootstrap"})
    max_abs: float = field(default=1e6, metadata={"help": "reject a neighbour's tensors holding any value "
                           "larger in magnitude (NaN and Inf are always rejected); 0 disables the bound"})
    log_level: str = field(default="info", metadata={"choices": ("debug", "info", "warning", "error"),
                           "help": "stderr log level"})

    def __post_init__(self) -> None:
        if self.id < 0:
            raise ConfigError(f"must be >= 0, got {self.id}", key="id")
        if self.threads < 1:
            raise ConfigError(f"must be >= 1, got {self.threads}", key="threads")
        if self.checkpoint_every < 0:
            raise ConfigError(f"must be >= 0, got {self.checkpoint_every}", key="checkpoint_every")
        for key in ("round_timeout", "start_timeout", "bootstrap_timeout", "heartbeat_every"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"must be > 0, got {getattr(self, key)}", key=key)
        if self.max_abs < 0:
            raise ConfigError(f"must be >= 0, got {self.max_abs}", key="max_abs")
        if self.bootstrap_retries < 1:
            raise ConfigError(f"must be >= 1, got {self.bootstrap_retries}", key="bootstrap_retries")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"{self.device!r} is not auto, cpu, cuda or cuda:N", key="device")
        for key in ("listen", "bootstrap"):
            if "://" not in getattr(self, key):
                raise ConfigError(f"{getattr(self, key)!r} is not an endpoint like tcp://host:port", key=key)
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"{self.log_level!r} is not one of debug, info, warning, error", key="log_level")


def load_node_config(path: str | Path) -> NodeConfig:
    """Parse a node TOML file; ``run`` and ``state_dir`` are resolved against the file's directory."""
    data = read_toml(path)
    cfg = from_mapping(NodeConfig, data, source=str(path))
    base = Path(path).parent
    run = Path(cfg.run) if Path(cfg.run).is_absolute() else base / cfg.run
    state = Path(cfg.state_dir) if Path(cfg.state_dir).is_absolute() else base / cfg.state_dir
    if not run.is_file():
        raise ConfigError(f"run settings file {run} does not exist", file=str(path), key="run")
    return replace(cfg, run=str(run), state_dir=str(state))
