"""Node daemon configuration (one TOML file per node) parsed into a frozen dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from peernet.config import (
    bounds,
    check_fields,
    check_gossip_start,
    from_mapping,
    load_run_settings,
    read_toml,
    resolve_topology,
)
from peernet.core.rounds import RoundPolicy
from peernet.core.topology_limits import endpoint_problem, public_key_problem
from peernet.errors import ConfigError
from peernet.metrics.prometheus import parse_listen
from peernet.transport.faults import FaultConfig

REJOIN_MODES = ("auto", "checkpoint", "average")
LOG_LEVELS = ("debug", "info", "warning", "error")
POSITIVE = bounds(gt=0, finite=True)


#: Node config keys a launcher (``peernet local``, ``chaos``, an in-process run) sets for each node itself: node
#: options that set them would be overridden or, like a fixed listen port, make every node of the host collide.
LAUNCHER_KEYS = ("id", "run", "listen", "advertise", "bootstrap", "state_dir", "secret_key", "bootstrap_public_key",
                 "bootstrap_public_key_file")

@dataclass(frozen=True)
class NodeConfig:
    """One node: who it is, where it listens, which run it belongs to, where it keeps its state."""

    id: int = field(metadata=bounds(ge=0) | {"help": "this node's id in the topology"})
    run: str = field(metadata={"help": "shared run settings file (RunSettings TOML); relative to this file"})
    listen: str = field(default="tcp://127.0.0.1:*", metadata={"help": "ROUTER bind address: tcp://HOST:PORT "
                        "(port * picks a free one) or ipc://PATH (a Unix socket, for neighbours on this host)"})
    advertise: str | None = field(default=None, metadata={"help": "what neighbours connect to: a host name or "
                                  "address (the bound port is kept) or a full tcp://HOST:PORT endpoint (default: "
                                  "the bound endpoint)"})
    bootstrap: str = field(default="tcp://127.0.0.1:5550", metadata={"help": "bootstrap service address"})
    state_dir: str = field(default="state", metadata={"help": "checkpoints, metrics and logs; relative to "
                           "this file"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when available, else CPU), cpu, cuda, "
                        "cuda:N"})
    threads: int = field(default=1, metadata=bounds(ge=1)
                         | {"help": "torch intra-op threads (several nodes share a host)"})
    checkpoint_every: int = field(default=20, metadata=bounds(ge=0)
                                  | {"help": "write a checkpoint every N rounds (0: only "
                                  "at exit)"})
    deadline_floor: float = field(default=5.0, metadata=POSITIVE | {"help": "seconds a round always waits for a live "
                                  "neighbour's message before excluding it from the round"})
    deadline_ceiling: float = field(default=30.0, metadata=POSITIVE
                                    | {"help": "seconds a round never waits longer than, "
                                    "however slow recent rounds were"})
    deadline_factor: float = field(default=10.0, metadata=bounds(ge=1, finite=True)
                                   | {"help": "deadline = this × the median time recent "
                                   "complete rounds took to gather, between the floor and the ceiling"})
    deadline_window: int = field(default=20, metadata=bounds(ge=1) | {"help": "how many recent complete rounds "
                                 "the deadline's median is taken over"})
    rounds_ahead: int = field(default=2, metadata=bounds(ge=2) | {"help": "how many rounds ahead of ours a "
                              "neighbour's message is kept (one reused buffer each); 2 lets two sides of a healed "
                              "partition meet again"})
    ping_every: float = field(default=0.5, metadata=POSITIVE | {"help": "seconds between pings while a round "
                              "waits: a neighbour that pings is alive and waited for up to the ceiling"})
    drain_limit: int = field(default=4, metadata=bounds(ge=1) | {"help": "messages per neighbour read by a round "
                             "that awaits nobody (bounded, so a flood cannot stall it)"})
    stall_drain_limit: int = field(default=64, metadata=bounds(ge=1) | {"help": "messages per neighbour read at "
                                   "once after a silence longer than deadline_floor (a frozen node's backlog)"})
    stall_wait: float = field(default=0.05, metadata=POSITIVE | {"help": "seconds that backlog read waits for "
                              "each next message"})
    goodbye_grace: float | None = field(default=None, metadata=bounds(ge=0, finite=True) | {"help": "seconds a "
                                        "finished node keeps serving until every neighbour said bye (default: "
                                        "deadline_ceiling)"})
    rollback: bool = field(default=True, metadata={"help": "roll a dropped edge's tracker flow back (docs/design.md "
                           "§3); false only to show the bias it prevents"})
    rejoin: str = field(default="auto", metadata={"choices": REJOIN_MODES, "help": "after a crash: continue "
                        "from the checkpoint's parameters, or from the average of the neighbours' current ones; "
                        "auto: the checkpoint unless it is more than max(10, 2 × checkpoint_every) rounds behind "
                        "the neighbours (a stale model would pull them back)"})
    rejoin_wait: float = field(default=5.0, metadata=POSITIVE | {"help": "seconds a restarted node waits for its "
                               "neighbours to say which round they are at"})
    record_params: bool = field(default=False, metadata={"help": "write the parameters into each evaluation "
                                "record (small models only; for tests and analysis)"})
    start_timeout: float = field(default=300.0, metadata=POSITIVE
                                 | {"help": "seconds to wait for every node to register"})
    bootstrap_timeout: float = field(default=2.0, metadata=POSITIVE | {"help": "seconds per bootstrap request try"})
    bootstrap_retries: int = field(default=3, metadata=bounds(ge=1) | {"help": "tries per bootstrap request"})
    heartbeat_every: float = field(default=1.0, metadata=POSITIVE | {"help": "seconds between status reports to the "
                                   "bootstrap"})
    max_abs: float = field(default=1e6, metadata=bounds(ge=0)
                           | {"help": "reject a neighbour's tensors holding any value "
                           "larger in magnitude (NaN and Inf are always rejected); 0 disables the bound"})
    faults: FaultConfig | None = field(default=None, metadata={"help": "[faults] table: injected message "
                                        "loss, delay, duplication, reordering, corruption and partitions for "
                                        "testing (docs/fault-injection.md); absent: none"})
    log_level: str = field(default="info", metadata={"choices": LOG_LEVELS,
                           "help": "stderr log level"})
    metrics_listen: str | None = field(default=None, metadata={"help": "HOST:PORT to serve Prometheus metrics on "
                                       "(http://HOST:PORT/metrics; port 0: a free one, written to state_dir/"
                                       "metrics_url); absent: none (docs/node.md, Metrics)"})
    secret_key: str | None = field(default=None, metadata={"help": "CURVE secret key file (mode 0600, from "
                                   "`peernet keygen`); relative to this file. Set: every connection is CURVE"})
    bootstrap_public_key: str | None = field(default=None, metadata={"help": "the bootstrap's CURVE public key "
                                             "(40 z85 characters); needed with secret_key"})
    bootstrap_public_key_file: str | None = field(default=None, metadata={"help": "or the file holding it "
                                                  "(bootstrap.key); relative to this file"})

    def __post_init__(self) -> None:
        check_fields(self)
        if self.metrics_listen is not None:
            parse_listen(self.metrics_listen)
        if self.deadline_ceiling < self.deadline_floor:
            raise ConfigError(f"must be >= deadline_floor ({self.deadline_floor}), got {self.deadline_ceiling}",
                              key="deadline_ceiling")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"{self.device!r} is not auto, cpu, cuda or cuda:N", key="device")
        for key in ("listen", "bootstrap"):
            if "://" not in getattr(self, key):
                raise ConfigError(f"{getattr(self, key)!r} is not an endpoint like tcp://host:port", key=key)
        # The bootstrap is dialled: a missing port or a wildcard host would only show as ZeroMQ's "Invalid argument".
        problem = endpoint_problem(self.bootstrap) if self.bootstrap.startswith("tcp://") else None
        if problem is not None:
            raise ConfigError(f"{self.bootstrap!r} {problem} (expected tcp://HOST:PORT)", key="bootstrap")
        if self.bootstrap_public_key is not None and self.bootstrap_public_key_file is not None:
            raise ConfigError("give bootstrap_public_key or bootstrap_public_key_file, not both",
                              key="bootstrap_public_key_file")
        if self.bootstrap_public_key is not None:
            problem = public_key_problem(self.bootstrap_public_key)  # the same rule as the topology's keys
            if problem is not None:
                raise ConfigError(f"the key {problem} (expected the text of bootstrap.key's public-key line)",
                                  key="bootstrap_public_key")
        has_bootstrap_key = self.bootstrap_public_key is not None or self.bootstrap_public_key_file is not None
        if self.secret_key is None and has_bootstrap_key:
            raise ConfigError("a bootstrap public key needs this node's own secret_key too", key="secret_key")
        if self.secret_key is not None and not has_bootstrap_key:
            raise ConfigError("with secret_key every connection is CURVE, so the node needs the bootstrap's public "
                              "key: set bootstrap_public_key_file (e.g. keys/bootstrap.key)",
                              key="bootstrap_public_key_file")

    def round_policy(self) -> RoundPolicy:
        """The round protocol's knobs as the pure policy object the exchange consults."""
        return RoundPolicy(floor=self.deadline_floor, ceiling=self.deadline_ceiling, factor=self.deadline_factor,
                           window=self.deadline_window, rounds_ahead=self.rounds_ahead, ping_every=self.ping_every,
                           drain_limit=self.drain_limit, stall_drain_limit=self.stall_drain_limit,
                           stall_wait=self.stall_wait, goodbye_grace=self.goodbye_grace)


def node_config_from_mapping(data: Mapping[str, Any], source: str | None) -> NodeConfig:
    """A NodeConfig from a node file's keys (``[faults]`` included); errors name ``source`` and the key."""
    data = dict(data)
    # The [faults] table has its own layout (per-peer overrides, partitions); parse it first so a bad
    # fault setting is reported with its dotted key.
    faults_table = data.pop("faults", None)
    faults = None if faults_table is None else FaultConfig.from_mapping(faults_table, source=source)
    return replace(from_mapping(NodeConfig, data, source=source), faults=faults)


def load_node_config(path: str | Path) -> NodeConfig:
    """Parse a node TOML file; its paths (run, state_dir, key files) are resolved against the file's directory."""
    cfg = node_config_from_mapping(read_toml(path), str(path))
    base = Path(path).parent
    run = base / cfg.run  # joining an absolute path keeps it as is
    if not run.is_file():
        raise ConfigError(f"run settings file {run} does not exist", file=str(path), key="run")
    # Checked here so the error names this file; the run file's own errors name the run file.
    settings = load_run_settings(run)
    check_gossip_start(settings, str(run))
    topology = resolve_topology(settings, key_files=False)
    if cfg.id not in topology.ids:
        raise ConfigError(f"node {cfg.id} is not in the topology ({topology.name or 'generated'}, "
                          f"ids {list(topology.ids)})", file=str(path), key="id")
    secret = None if cfg.secret_key is None else str(base / cfg.secret_key)
    bootstrap_key = None if cfg.bootstrap_public_key_file is None else str(base / cfg.bootstrap_public_key_file)
    return replace(cfg, run=str(run), state_dir=str(base / cfg.state_dir), secret_key=secret,
                   bootstrap_public_key_file=bootstrap_key)
