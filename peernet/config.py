"""Run settings shared by the simulator and the daemons: TOML into a frozen dataclass that rejects typos."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from peernet import toml_files
from peernet.core.schedules import SCHEDULES, step_size_at
from peernet.core.tracker_start import TRACKER_STARTS, AverageStart, average_start
from peernet.errors import ConfigError, TopologyError

T = TypeVar("T")

ALGORITHM_NAMES = ("dsgd", "dsgdm", "qg-dsgdm", "decentlam", "gradient-tracking", "momentum-tracking")
DATASET_NAMES = ("fashion-mnist", "mnist", "cifar10", "quadratic")
MODEL_NAMES = ("mlp", "lenet", "vgg11", "resnet20")
PARTITION_NAMES = ("iid", "classes", "dirichlet")
DTYPE_NAMES = ("float32", "float64")
#: peernet.core.compressors.COMPRESSORS, repeated here so that reading settings does not load torch.
TRACKING_NAMES = ("gradient-tracking", "momentum-tracking")
#: The most gossip averaging rounds of the average start (an 8-node ring needs about 20 for 1% of the spread).
MAX_START_ROUNDS = 100_000
COMPRESSION_NAMES = ("none", "fp16", "bf16", "topk", "randk", "lowrank")


def _choices(*names: str) -> dict[str, Any]:
    return {"choices": names}


def bounds(*, ge: float | None = None, gt: float | None = None, lt: float | None = None, le: float | None = None,
           finite: bool = False) -> dict[str, Any]:
    """Field metadata for a numeric key's allowed range; ``check_fields`` enforces it, the docs print it."""
    pairs = (("ge", ge), ("gt", gt), ("lt", lt), ("le", le), ("finite", finite or None))
    return {k: v for k, v in pairs if v is not None}


def describe_bounds(meta: typing.Mapping[str, Any]) -> str | None:
    """``meta``'s range in words, as error messages and docs/configuration.md say it ("in [0, 1)", "> 0")."""
    ge, gt, lt, le = (meta.get(k) for k in ("ge", "gt", "lt", "le"))
    if ge is not None and lt is not None:
        return f"in [{ge:g}, {lt:g})"
    if ge is not None and le is not None:
        return f"in [{ge:g}, {le:g}]"
    parts = [f"{op} {v:g}" for op, v in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if v is not None]
    if meta.get("finite"):
        parts.append("finite")
    return " and ".join(parts) or None


def check_fields(obj: Any) -> None:
    """Enforce every field's ``choices`` and bounds metadata (NaN is outside every range)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{value!r} is not one of {', '.join(choices)}", key=f.name)
        rule = describe_bounds(f.metadata)
        if rule is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        m = f.metadata
        ok = ((m.get("ge") is None or value >= m["ge"]) and (m.get("gt") is None or value > m["gt"])
              and (m.get("lt") is None or value < m["lt"]) and (m.get("le") is None or value <= m["le"])
              and (not m.get("finite") or math.isfinite(value)) and value == value)
        if not ok:
            raise ConfigError(f"must be {rule}, got {value}", key=f.name)


#: Run settings added after runs were already being checkpointed: in the fingerprint only when not default.
LATER_KEYS = ("schedule", "warmup_rounds", "decay", "augment", "clip_tau", "clip_tau_tracker", "compression",
              "compression_ratio", "compression_rank", "consensus_step", "tracker_init", "tracker_init_rounds")


@dataclass(frozen=True)
class RunSettings:
    """Everything that must agree between nodes of one run (and so enters the run fingerprint).

    Field metadata ``help`` documents each key; ``docs/configuration.md`` lists them all.
    """

    algorithm: str = field(default="momentum-tracking", metadata=_choices(*ALGORITHM_NAMES)
                           | {"help": "optimizer rule"})
    topology: str = field(default="ring", metadata={"help": "generator kind (ring, torus, hypercube, "
                          "exponential, complete, star, random) or path of a topology TOML file"})
    nodes: int = field(default=8, metadata=bounds(ge=1) | {"help": "number of nodes (ignored when topology is a file)"})
    dataset: str = field(default="fashion-mnist", metadata=_choices(*DATASET_NAMES) | {"help": "training data"})
    data_dir: str | None = field(default=None, metadata={"help": "directory holding the dataset files "
                                 "(default: $PEERNET_DATA, then /usr/share/datasets/<name>)"})
    model: str = field(default="lenet", metadata=_choices(*MODEL_NAMES) | {"help": "network (image datasets)"})
    partition: str = field(default="classes", metadata=_choices(*PARTITION_NAMES)
                           | {"help": "how the training set is split over nodes"})
    classes_per_node: int = field(default=2, metadata=bounds(ge=1)
                                  | {"help": "classes held by each node (partition=classes)"})
    alpha: float = field(default=1.0, metadata=bounds(gt=0, finite=True)
                         | {"help": "Dirichlet concentration (partition=dirichlet)"})
    val_fraction: float = field(default=0.0, metadata=bounds(ge=0, lt=1)
                                | {"help": "fraction of the training set held out for "
                                "validation before partitioning"})
    lr: float | None = field(default=None, metadata=bounds(gt=0, finite=True)
                             | {"help": "step size η (default 0.05 for quadratic, 5e-3 otherwise)"})
    beta: float = field(default=0.9, metadata=bounds(ge=0, lt=1) | {"help": "momentum β"})
    weight_decay: float = field(default=1e-3, metadata=bounds(ge=0, finite=True)
                                | {"help": "coupled weight decay λ"})
    batch_size: int = field(default=100, metadata=bounds(ge=1) | {"help": "mini-batch per node per round (images)"})
    rounds: int | None = field(default=None, metadata=bounds(ge=1) | {"help": "number of rounds (overrides epochs)"})
    epochs: float = field(default=1.0, metadata=bounds(gt=0, finite=True)
                          | {"help": "epochs over each node's shard when rounds is unset"})
    seed: int = field(default=0, metadata=bounds(ge=0) | {"help": "run seed: initial model, partitions, data order"})
    eval_every: int = field(default=0, metadata=bounds(ge=0)
                            | {"help": "evaluate every N rounds (0: about 10 times per run)"})
    eval_samples: int = field(default=2000, metadata=bounds(ge=0) | {"help": "evaluations during training use the "
                              "first N test (and validation) samples; the last round's always uses all (0: all)"})
    heterogeneity: float = field(default=1.0, metadata=bounds(ge=0, finite=True)
                                 | {"help": "quadratic: spread of the nodes' local optima"})
    dim: int = field(default=10, metadata=bounds(ge=1) | {"help": "quadratic: problem dimension"})
    schedule: str = field(default="constant", metadata=_choices(*SCHEDULES)
                          | {"help": "step-size schedule over the run: constant, cosine (down towards 0), step "
                             "(× decay at 1/2 and again at 3/4 of the rounds)"})
    warmup_rounds: int = field(default=0, metadata=bounds(ge=0) | {"help": "rounds of linear warm-up from "
                               "lr/warmup_rounds to lr before the schedule"})
    decay: float = field(default=0.1, metadata=bounds(gt=0, le=1) | {"help": "the step schedule's factor"})
    augment: str = field(default="none", metadata=_choices("none", "crop") | {"help": "image augmentation: "
                         "crop = random crop after zero padding by 1/8 of the side, per sample, from (seed, node, "
                         "round)"})
    dtype: str | None = field(default=None, metadata=_choices(*DTYPE_NAMES)
                              | {"help": "parameter dtype (default float64 for quadratic, float32 otherwise)"})
    clip_tau: float | None = field(default=None, metadata=bounds(gt=0, finite=True) | {"help": "ClippedGossip "
                                   "radius τ: each neighbour's pull v_j − v_i on a gossiped tensor is scaled down "
                                   "to Euclidean norm τ, so one member moves a neighbour by at most W_ij·τ per "
                                   "round (docs/algorithms.md, Robust mixing); unset: plain gossip"})
    clip_tau_tracker: float | None = field(default=None, metadata=bounds(gt=0, finite=True) | {"help": "τ for "
                                           "the tracker tensor d of gradient- and momentum-tracking, whose scale "
                                           "differs from the parameters' (default: clip_tau; set alone, only d "
                                           "is clipped)"})
    compression: str = field(default="none", metadata=_choices(*COMPRESSION_NAMES) | {"help": "compressed "
                             "gossip with public copies (CHOCO): each node sends the compressed change of its public "
                             "copy; fp16/bf16 = cast, topk/randk = a fraction of the entries, lowrank = PowerSGD "
                             "factors of each weight matrix; tracking stays exact (docs/algorithms.md, Compressed "
                             "exchange)"})
    compression_ratio: float | None = field(default=None, metadata=bounds(gt=0, le=1) | {"help": "fraction of "
                                            "the entries topk and randk send each round (default 0.1)"})
    compression_rank: int | None = field(default=None, metadata=bounds(ge=1) | {"help": "rank of lowrank's "
                                         "factors (default 2)"})
    consensus_step: float | None = field(default=None, metadata=bounds(gt=0, le=1) | {"help": "consensus step γ "
                                         "of compressed gossip: mixed = v + γ Σ_j W_ij (x̂_j − x̂_i); default from the "
                                         "fraction ρ of entries sent: 1 for fp16/bf16, 1 − (1 − ρ)³ topk, ρ/2 randk, "
                                         "ρ lowrank (docs/algorithms.md)"})

    tracker_init: str = field(default="zero", metadata=_choices(*TRACKER_STARTS) | {"help": "how the tracking "
                              "rules' tracker starts: zero, or average = from the network average of each node's "
                              "first momentum, as the authors' code (docs/algorithms.md, Average start)"})
    tracker_init_rounds: int = field(default=0, metadata=bounds(ge=0, le=MAX_START_ROUNDS) | {"help": "tracker_init "
                                     "= average: gossip averaging rounds before the first descent (the run's first "
                                     "rounds); 0: the exact average, which only the simulator can compute"})

    def __post_init__(self) -> None:
        check_fields(self)
        self._check_compression()
        self._check_start()

    def _check_start(self) -> None:
        if self.tracker_init != "zero" and self.algorithm not in TRACKING_NAMES:
            raise ConfigError(f"applies only to the tracking rules ({', '.join(TRACKING_NAMES)}), not "
                              f"{self.algorithm!r}", key="tracker_init")
        if self.tracker_init_rounds and self.tracker_init != "average":
            raise ConfigError("applies only with tracker_init = 'average'", key="tracker_init_rounds")

    def _check_compression(self) -> None:
        """Compression keys only where they act: a key that would change nothing is a mistake worth naming."""
        uses = {"compression_ratio": ("topk", "randk"), "compression_rank": ("lowrank",),
                "consensus_step": COMPRESSION_NAMES[1:]}
        for key, compressors in uses.items():
            if getattr(self, key) is not None and self.compression not in compressors:
                raise ConfigError(f"applies only with compression = {' or '.join(compressors)}, not "
                                  f"{self.compression!r}", key=key)
        if self.compression != "none" and (self.clip_tau is not None or self.clip_tau_tracker is not None):
            raise ConfigError("cannot be combined with clip_tau / clip_tau_tracker (ClippedGossip clips pulls of "
                              "the values, compressed gossip mixes public copies)", key="compression")

    @property
    def step_size(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.05 if self.dataset == "quadratic" else 5e-3

    @property
    def param_dtype(self) -> str:
        if self.dtype is not None:
            return self.dtype
        return "float64" if self.dataset == "quadratic" else "float32"

    def fingerprint(self, topology_fingerprint: str = "") -> str:
        """Hash of every setting that must agree between nodes (the data directory may differ)."""
        data = dataclasses.asdict(self)
        data.pop("data_dir")
        # Keys added later enter the fingerprint only when set, so runs of earlier versions resume unchanged.
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for key in LATER_KEYS:
            if data[key] == defaults[key]:
                data.pop(key)
        data["topology"] = topology_fingerprint or data["topology"]
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check a TOML value against a field annotation; ints are accepted where floats are expected.

    Supported annotations: int, float, str, bool, ``list[X]`` of those, and ``X | None``.
    """
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(annotation)
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        names = " or ".join("none" if o is type(None) else o.__name__ for o in options)
        raise ConfigError(f"expected {names}, got {type(value).__name__} {value!r}", key=key)
    if origin is tuple:
        return _coerce_tuple(value, annotation, key)
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"expected a list of {item.__name__}, got {type(value).__name__} {value!r}", key=key)
        items = []
        for i, v in enumerate(value):
            try:
                items.append(_coerce(v, item, key))
            except ConfigError as exc:
                raise ConfigError(f"item {i}: {exc.reason}", key=key) from None
        return items
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str):
        return value
    if annotation is bool and isinstance(value, bool):
        return value
    name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"expected {name}, got {type(value).__name__} {value!r}", key=key)


def _coerce_tuple(value: Any, annotation: Any, key: str) -> Any:
    """TOML arrays into the tuples a dataclass holds: ``tuple[float, float]`` ([low, high]) and
    ``tuple[frozenset[int], ...]`` (groups of node ids)."""
    args = typing.get_args(annotation)
    if args == (float, float) and isinstance(value, list) and len(value) == 2:
        return tuple(_coerce(v, float, key) for v in value)
    if len(args) == 2 and args[1] is Ellipsis and typing.get_origin(args[0]) is frozenset:
        (item,) = typing.get_args(args[0])
        if isinstance(value, list) and all(isinstance(g, list) for g in value):
            return tuple(frozenset(_coerce(v, item, key) for v in g) for g in value)
        raise ConfigError(f"expected a list of lists of node ids, got {type(value).__name__} {value!r}", key=key)
    want = "[low, high]" if args == (float, float) else str(annotation)
    raise ConfigError(f"expected {want}, got {type(value).__name__} {value!r}", key=key)


def from_mapping(cls: type[T], data: dict[str, Any], *, source: str | None = None,
                 section: str = "", base: T | None = None, also: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types.

    Every error names ``source`` (the file) and the dotted key, so a user can fix the file directly.
    With ``base``, the mapping overrides only the keys it names (e.g. ``[faults.peers.N]`` over
    ``[faults]``); ``also`` lists keys the caller handles itself, for the unknown-key message.
    """
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        dotted = f"{section}.{raw_key}" if section else raw_key
        if key not in fields:
            raise ConfigError(f"unknown key; allowed keys: {', '.join(sorted(fields))}{also}", file=source,
                              key=dotted)
        try:
            kwargs[key] = _coerce(value, hints[key], dotted)
        except ConfigError as exc:
            raise ConfigError(exc.reason, file=source, key=dotted) from None
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if base is None and required and name not in kwargs:
            dotted = f"{section}.{name}" if section else name
            raise ConfigError("missing required key", file=source, key=dotted)
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)  # type: ignore[type-var]
    except ConfigError as exc:
        bad_key = f"{section}.{exc.key}" if section and exc.key else exc.key
        raise ConfigError(exc.reason, file=source, key=bad_key) from None


#: The largest config file read (run, node, bootstrap, scenario, study grid, node options): they take a few KB.
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a config TOML file: every I/O or syntax problem, a FIFO or device instead of a file, a file over
    MAX_CONFIG_BYTES, or nesting that would exhaust the parser, is a ConfigError naming the file."""
    return toml_files.read_toml(path, MAX_CONFIG_BYTES)


def load_run_settings(path: str | Path, overrides: dict[str, Any] | None = None) -> RunSettings:
    """Read run settings from a TOML file, then apply ``overrides`` (e.g. CLI options that were given)."""
    data = read_toml(path)
    # A topology or data path in a config file is relative to that file, not to the caller's cwd.
    for key in ("topology", "data_dir"):
        value: Any = data.get(key)
        if isinstance(value, str) and _looks_like_path(value) and not Path(value).is_absolute():
            data[key] = str(Path(path).parent / value)
    merged = {**data, **(overrides or {})}
    settings = from_mapping(RunSettings, merged, source=str(path))
    # Checked here, not only in resolve_topology, so the message names the file the typo is in.
    _check_topology_name(settings.topology, file=str(path))
    return settings


def tracker_start(settings: RunSettings, rounds: int, *, gossip_only: bool = False) -> AverageStart | None:
    """The run's average start (None: the zero start), checked against its ``rounds``; ``gossip_only`` (daemons,
    which cannot compute the exact average) refuses ``tracker_init_rounds = 0``."""
    start = average_start(settings.tracker_init, settings.tracker_init_rounds)
    if start is None:
        return None
    if start.rounds >= rounds:
        raise ConfigError(f"{start.rounds} averaging rounds leave none of the run's {rounds} rounds to train",
                          key="tracker_init_rounds")
    if gossip_only:
        check_gossip_start(settings)
    return start


def check_gossip_start(settings: RunSettings, file: str | None = None) -> None:
    """Refuse the exact average start (``tracker_init_rounds = 0``) for daemons, which can only average by gossip."""
    if settings.tracker_init == "average" and settings.tracker_init_rounds == 0:
        raise ConfigError("tracker_init = 'average' with 0 rounds is the exact network average, which only the "
                          "simulator can compute; daemons average by gossip: set tracker_init_rounds to K >= 1",
                          file=file, key="tracker_init_rounds")


def scheduled_step_size(settings: RunSettings, round_: int, rounds: int) -> float:
    """The step size of round ``round_`` of ``rounds`` under the run's schedule (peernet.core.schedules)."""
    return step_size_at(settings.step_size, round_, rounds, schedule=settings.schedule,
                        warmup=settings.warmup_rounds, decay=settings.decay)


def total_rounds(settings: RunSettings, rounds_per_epoch: int) -> int:
    """``rounds`` if set, else ``epochs`` × the mean shard's batches per epoch (at least one round)."""
    if settings.rounds is not None:
        return settings.rounds
    return max(1, math.ceil(settings.epochs * rounds_per_epoch))


def eval_interval(settings: RunSettings, rounds: int) -> int:
    """Rounds between evaluations: ``eval_every``, else about ten per run."""
    return settings.eval_every or max(1, rounds // 10)


def run_fingerprint(settings: RunSettings, topology: Any) -> str:
    """The fingerprint every node of a run must present: run settings plus the topology's W."""
    return settings.fingerprint(topology.fingerprint())


def _check_topology_name(topology: str, file: str | None = None) -> None:
    """A generator kind, or something that names a topology file; otherwise a ConfigError."""
    from peernet.core.topology import GENERATORS

    if topology not in GENERATORS and not (_looks_like_path(topology) or Path(topology).exists()):
        raise ConfigError(f"{topology!r} is neither a generator ({', '.join(GENERATORS)}) "
                          "nor an existing topology file", file=file, key="topology")


def _looks_like_path(value: str) -> bool:
    return "/" in value or value.endswith(".toml") or value.startswith(".")


def resolve_topology(settings: RunSettings, *, key_files: bool = True) -> Any:
    """The run's Topology: loaded from a file, or generated from a kind and ``settings.nodes``.

    ``key_files=False`` skips the nodes' ``public_key_file`` entries, for callers that need only the graph.
    """
    from peernet.core.topology import GENERATORS, generate
    from peernet.topology_files import load_topology

    if settings.topology in GENERATORS:
        try:
            return generate(settings.topology, settings.nodes, seed=settings.seed)
        except TopologyError as exc:  # e.g. a size that is refused: say which settings asked for it
            raise TopologyError(f"{exc.reason} (topology = {settings.topology!r}, nodes = {settings.nodes})",
                                key="nodes") from None
    _check_topology_name(settings.topology)
    return load_topology(settings.topology, key_files=key_files)
