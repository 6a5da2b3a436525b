"""Node daemon configuration (one TOML file per node) parsed into a frozen dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from peernet.config import from_mapping, load_run_settings, read_toml, resolve_topology
from peernet.errors import ConfigError
from peernet.security.keys import is_z85_key
from peernet.transport.faults import FaultConfig

REJOIN_MODES = ("auto", "checkpoint", "average")


def rejoin_from_checkpoint(mode: str, lag: int, checkpoint_every: int) -> bool:
    """Whether a restarted node continues from its checkpoint (else from its neighbours' average), ``lag``
    rounds behind them. ``auto`` tolerates the lag a periodic checkpoint plus a prompt restart leave."""
    if mode == "auto":
        return lag <= max(10, 2 * checkpoint_every)
    return mode == "checkpoint"


@dataclass(frozen=True)
class NodeConfig:
    """One node: who it is, where it listens, which run it belongs to, where it keeps its state."""

    id: int = field(metadata={"help": "this node's id in the topology"})
    run: str = field(metadata={"help": "shared run settings file (RunSettings TOML); relative to this file"})
    listen: str = field(default="tcp://127.0.0.1:*", metadata={"help": "ROUTER bind address; port * picks a "
                        "free one"})
    advertise: str | None = field(default=None, metadata={"help": "what neighbours connect to: a host name or "
                                  "address (the bound port is kept) or a full tcp://HOST:PORT endpoint (default: "
                                  "the bound endpoint)"})
    bootstrap: str = field(default="tcp://127.0.0.1:5550", metadata={"help": "bootstrap service address"})
    state_dir: str = field(default="state", metadata={"help": "checkpoints, metrics and logs; relative to "
                           "this file"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when available, else CPU), cpu, cuda, "
                        "cuda:N"})
    threads: int = field(default=1, metadata={"help": "torch intra-op threads (several nodes share a host)"})
    checkpoint_every: int = field(default=20, metadata={"help": "write a checkpoint every N rounds (0: only "
                                  "at exit)"})
    deadline_floor: float = field(default=5.0, metadata={"help": "seconds a round always waits for a live "
                                  "neighbour's message before excluding it from the round"})
    deadline_ceiling: float = field(default=30.0, metadata={"help": "seconds a round never waits longer than, "
                                    "however slow recent rounds were"})
    deadline_factor: float = field(default=10.0, metadata={"help": "deadline = this × the median time recent "
                                   "complete rounds took to gather, between the floor and the ceiling"})
    rollback: bool = field(default=True, metadata={"help": "roll a dropped edge's tracker flow back (docs/design.md "
                           "§3); false only to show the bias it prevents"})
    rejoin: str = field(default="auto", metadata={"choices": REJOIN_MODES, "help": "after a crash: continue "
                        "from the checkpoint's parameters, or from the average of the neighbours' current ones; "
                        "auto: the checkpoint unless it is more than max(10, 2 × checkpoint_every) rounds behind "
                        "the neighbours (a stale model would pull them back)"})
    rejoin_wait: float = field(default=5.0, metadata={"help": "seconds a restarted node waits for its "
                               "neighbours to say which round they are at"})
    record_params: bool = field(default=False, metadata={"help": "write the parameters into each evaluation "
                                "record (small models only; for tests and analysis)"})
    start_timeout: float = field(default=300.0, metadata={"help": "seconds to wait for every node to register"})
    bootstrap_timeout: float = field(default=2.0, metadata={"help": "seconds per bootstrap request try"})
    bootstrap_retries: int = field(default=3, metadata={"help": "tries per bootstrap request"})
    heartbeat_every: float = field(default=1.0, metadata={"help": "seconds between status reports to the "
                                   "bootstrap"})
    max_abs: float = field(default=1e6, metadata={"help": "reject a neighbour's tensors holding any value "
                           "larger in magnitude (NaN and Inf are always rejected); 0 disables the bound"})
    faults: FaultConfig | None = field(default=None, metadata={"help": "[faults] table: injected message "
                                        "loss, delay, duplication, reordering, corruption and partitions for "
                                        "testing (docs/fault-injection.md); absent: none"})
    log_level: str = field(default="info", metadata={"choices": ("debug", "info", "warning", "error"),
                           "help": "stderr log level"})
    secret_key: str | None = field(default=None, metadata={"help": "CURVE secret key file (mode 0600, from "
                                   "`peernet keygen`); relative to this file. Set: every connection is CURVE"})
    bootstrap_public_key: str | None = field(default=None, metadata={"help": "the bootstrap's CURVE public key "
                                             "(40 z85 characters); needed with secret_key"})
    bootstrap_public_key_file: str | None = field(default=None, metadata={"help": "or the file holding it "
                                                  "(bootstrap.key); relative to this file"})

    def __post_init__(self) -> None:
        if self.id < 0:
            raise ConfigError(f"must be >= 0, got {self.id}", key="id")
        if self.threads < 1:
            raise ConfigError(f"must be >= 1, got {self.threads}", key="threads")
        if self.checkpoint_every < 0:
            raise ConfigError(f"must be >= 0, got {self.checkpoint_every}", key="checkpoint_every")
        for key in ("deadline_floor", "deadline_ceiling", "rejoin_wait", "start_timeout", "bootstrap_timeout",
                    "heartbeat_every"):
            if not 0 < getattr(self, key) < math.inf:
                raise ConfigError(f"must be > 0 and finite, got {getattr(self, key)}", key=key)
        if self.deadline_ceiling < self.deadline_floor:
            raise ConfigError(f"must be >= deadline_floor ({self.deadline_floor}), got {self.deadline_ceiling}",
                              key="deadline_ceiling")
        if not 1 <= self.deadline_factor < math.inf:
            raise ConfigError(f"must be >= 1, got {self.deadline_factor}", key="deadline_factor")
        if self.rejoin not in REJOIN_MODES:
            raise ConfigError(f"{self.rejoin!r} is not one of {', '.join(REJOIN_MODES)}", key="rejoin")
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
        if self.bootstrap_public_key is not None and self.bootstrap_public_key_file is not None:
            raise ConfigError("give bootstrap_public_key or bootstrap_public_key_file, not both",
                              key="bootstrap_public_key_file")
        if self.bootstrap_public_key is not None and not is_z85_key(self.bootstrap_public_key):
            raise ConfigError("expected 40 z85 characters (the text of bootstrap.key's public-key line)",
                              key="bootstrap_public_key")
        has_bootstrap_key = self.bootstrap_public_key is not None or self.bootstrap_public_key_file is not None
        if self.secret_key is None and has_bootstrap_key:
            raise ConfigError("a bootstrap public key needs this node's own secret_key too", key="secret_key")
        if self.secret_key is not None and not has_bootstrap_key:
            raise ConfigError("with secret_key every connection is CURVE, so the node needs the bootstrap's public "
                              "key: set bootstrap_public_key_file (e.g. keys/bootstrap.key)",
                              key="bootstrap_public_key_file")


def load_node_config(path: str | Path) -> NodeConfig:
    """Parse a node TOML file; its paths (run, state_dir, key files) are resolved against the file's directory."""
    data = read_toml(path)
    # The [faults] table has its own strict parser (per-peer overrides, partitions); parse it first so a bad
    # fault setting is reported with its dotted key.
    faults_table = data.pop("faults", None)
    faults = None if faults_table is None else FaultConfig.from_mapping(faults_table, source=str(path))
    cfg = from_mapping(NodeConfig, data, source=str(path))
    base = Path(path).parent
    run = base / cfg.run  # joining an absolute path keeps it as is
    if not run.is_file():
        raise ConfigError(f"run settings file {run} does not exist", file=str(path), key="run")
    # Checked here so the error names this file; the run file's own errors name the run file.
    topology = resolve_topology(load_run_settings(run), key_files=False)
    if cfg.id not in topology.ids:
        raise ConfigError(f"node {cfg.id} is not in the topology ({topology.name or 'generated'}, "
                          f"ids {list(topology.ids)})", file=str(path), key="id")
    secret = None if cfg.secret_key is None else str(base / cfg.secret_key)
    bootstrap_key = None if cfg.bootstrap_public_key_file is None else str(base / cfg.bootstrap_public_key_file)
    return replace(cfg, run=str(run), state_dir=str(base / cfg.state_dir), secret_key=secret,
                   bootstrap_public_key_file=bootstrap_key, faults=faults)
