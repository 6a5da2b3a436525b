"""Chaos scenarios as data: a TOML file of run settings, node options, an optional network lab and timed events."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from peernet.config import RunSettings, from_mapping, load_run_settings, read_toml
from peernet.errors import ConfigError

#: action -> the keys it takes besides the trigger (`at_round` / `at_time` / `after`) and `watch`.
ACTIONS: dict[str, tuple[str, ...]] = {
    "kill": ("node",),             # SIGKILL a node
    "stop": ("node",),             # SIGSTOP: the process freezes, its sockets stay open
    "cont": ("node",),             # SIGCONT
    "restart": ("node",),          # start the node again from its state directory (checkpoint)
    "kill_bootstrap": (),          # SIGKILL the bootstrap
    "restart_bootstrap": (),       # start the bootstrap again from its registry
    "loss": ("percent", "nodes"),  # network lab: random loss on the nodes' incoming packets (nftables)
    "partition": ("groups",),      # network lab: drop traffic between groups of nodes
    "heal": (),                    # network lab: end the partition
    "rate": ("rate", "nodes"),     # network lab: token-bucket bandwidth limit (tc tbf)
}
NETWORK_ACTIONS = frozenset({"loss", "partition", "heal", "rate"})
TOP_KEYS = ("name", "run", "settings", "nodes", "network", "events", "timeout")


@dataclass(frozen=True)
class Event:
    action: str
    at_round: int | None = None   # when node `watch` has finished this round
    at_time: float | None = None  # seconds after the cluster started
    after: float | None = None    # seconds after the previous event
    watch: int | None = None      # whose round `at_round` means (default: `node`, else node 0)
    node: int | None = None
    percent: float | None = None
    nodes: tuple[int, ...] | None = None
    groups: tuple[tuple[int, ...], ...] | None = None
    rate: str | None = None


@dataclass(frozen=True)
class Network:
    """Put the bootstrap and every node in a network namespace of its own (peernet.chaos.netns)."""

    loss_percent: float = 0.0   # random loss from the start on every node's incoming packets
    rate: str | None = None     # bandwidth limit from the start on every node, e.g. "100mbit"
    port: int = 7000            # each node listens on <its address>:port, the bootstrap on port - 1


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    settings: RunSettings
    node_options: dict[str, Any] = field(default_factory=dict)
    network: Network | None = None
    events: tuple[Event, ...] = ()
    timeout: float = 900.0


def _fail(path: Path, key: str, reason: str) -> ConfigError:
    return ConfigError(reason, file=str(path), key=key)


def _ids(value: Any, path: Path, key: str, n: int) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _fail(path, key, f"expected a list of node ids, got {value!r}")
    bad = [v for v in value if not 0 <= v < n]
    if bad:
        raise _fail(path, key, f"node ids {bad} are not in the topology (0..{n - 1})")
    return tuple(value)


def _event(raw: Any, index: int, path: Path, n: int) -> Event:
    key = f"events[{index}]"
    if not isinstance(raw, dict):
        raise _fail(path, key, f"expected a table, got {raw!r}")
    action = raw.get("action")
    if action not in ACTIONS:
        raise _fail(path, f"{key}.action", f"{action!r} is not one of {', '.join(ACTIONS)}")
    allowed = {"action", "at_round", "at_time", "after", "watch", *ACTIONS[action]}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(path, f"{key}.{unknown[0]}", f"unknown key for action {action!r} (allowed: {sorted(allowed)})")
    triggers = [t for t in ("at_round", "at_time", "after") if t in raw]
    if len(triggers) != 1:
        raise _fail(path, key, f"needs exactly one of at_round, at_time, after; got {triggers or 'none'}")
    values: dict[str, Any] = {k: v for k, v in raw.items() if k not in ("nodes", "groups")}
    event = from_mapping(Event, values, source=str(path), section=key)
    if "nodes" in raw:
        event = replace(event, nodes=_ids(raw["nodes"], path, f"{key}.nodes", n))
    if "groups" in raw:
        groups = raw["groups"]
        if not isinstance(groups, list) or not groups:
            raise _fail(path, f"{key}.groups", f"expected a list of lists of node ids, got {groups!r}")
        event = replace(event, groups=tuple(_ids(g, path, f"{key}.groups", n) for g in groups))
    required = ACTIONS[action][0] if ACTIONS[action] else None
    if required in ("node", "percent", "rate", "groups") and getattr(event, required) is None:
        raise _fail(path, f"{key}.{required}", f"action {action!r} needs it")
    for name in ("node", "watch"):
        value = getattr(event, name)
        if value is not None and not 0 <= value < n:
            raise _fail(path, f"{key}.{name}", f"node {value} is not in the topology (0..{n - 1})")
    if event.percent is not None and not 0 <= event.percent <= 100:
        raise _fail(path, f"{key}.percent", f"must be in [0, 100], got {event.percent}")
    for name in ("at_round", "at_time", "after"):
        value = getattr(event, name)
        if value is not None and not 0 <= value < math.inf:
            raise _fail(path, f"{key}.{name}", f"must be >= 0, got {value}")
    return event


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; every error names the file and the key."""
    path = Path(path)
    data = read_toml(path)
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise _fail(path, unknown[0], f"unknown key (allowed: {', '.join(TOP_KEYS)})")
    run = data.get("run")
    if not isinstance(run, str):
        raise _fail(path, "run", "needs the run settings file, e.g. run = \"../run.toml\"")
    run_path = path.parent / run
    if not run_path.is_file():
        raise _fail(path, "run", f"{run_path} does not exist")
    overrides = data.get("settings", {})
    if not isinstance(overrides, dict):
        raise _fail(path, "settings", "expected a table of run settings to override")
    try:
        settings = load_run_settings(run_path, overrides)
    except ConfigError as exc:
        if exc.key is not None and exc.key.split(".")[0] in overrides:  # the scenario's override is at fault
            raise _fail(path, f"settings.{exc.key}", exc.reason) from None
        raise
    from peernet.config import resolve_topology

    n = resolve_topology(settings, key_files=False).n
    nodes = data.get("nodes", {})
    if not isinstance(nodes, dict):
        raise _fail(path, "nodes", "expected a table of node options")
    network = None
    if "network" in data:
        if not isinstance(data["network"], dict):
            raise _fail(path, "network", "expected a table")
        network = from_mapping(Network, data["network"], source=str(path), section="network")
    raw_events = data.get("events", [])
    if not isinstance(raw_events, list):
        raise _fail(path, "events", "expected an array of tables ([[events]])")
    events = tuple(_event(raw, i, path, n) for i, raw in enumerate(raw_events))
    for i, event in enumerate(events):
        if event.action in NETWORK_ACTIONS and network is None:
            raise _fail(path, f"events[{i}].action", f"{event.action!r} needs a [network] table (namespaces)")
    timeout = data.get("timeout", 900.0)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout < math.inf:
        raise _fail(path, "timeout", f"must be a number of seconds > 0, got {timeout!r}")
    return Scenario(name=str(data.get("name", path.stem)), path=path, settings=settings, node_options=dict(nodes),
                    network=network, events=events, timeout=float(timeout))
