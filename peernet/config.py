"""Run settings shared by the simulator and the daemons: TOML into a frozen dataclass that rejects typos."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from peernet.errors import ConfigError

T = TypeVar("T")

ALGORITHM_NAMES = ("dsgd", "dsgdm", "qg-dsgdm", "decentlam", "gradient-tracking", "momentum-tracking")
DATASET_NAMES = ("fashion-mnist", "mnist", "cifar10", "quadratic")
MODEL_NAMES = ("mlp", "lenet", "vgg11", "resnet20")
PARTITION_NAMES = ("iid", "classes", "dirichlet")
DTYPE_NAMES = ("float32", "float64")


def _choices(*names: str) -> dict[str, Any]:
    return {"choices": names}


@dataclass(frozen=True)
class RunSettings:
    """Everything that must agree between nodes of one run (and so enters the run fingerprint).

    Field metadata ``help`` documents each key; ``docs/configuration.md`` lists them all.
    """

    algorithm: str = field(default="momentum-tracking", metadata=_choices(*ALGORITHM_NAMES)
                           | {"help": "optimizer rule"})
    topology: str = field(default="ring", metadata={"help": "generator kind (ring, torus, hypercube, "
                          "exponential, complete, star, random) or path of a topology TOML file"})
    nodes: int = field(default=8, metadata={"help": "number of nodes (ignored when topology is a file)"})
    dataset: str = field(default="fashion-mnist", metadata=_choices(*DATASET_NAMES) | {"help": "training data"})
    data_dir: str | None = field(default=None, metadata={"help": "directory holding the dataset files "
                                 "(default: $PEERNET_DATA, then /usr/share/datasets/<name>)"})
    model: str = field(default="lenet", metadata=_choices(*MODEL_NAMES) | {"help": "network (image datasets)"})
    partition: str = field(default="classes", metadata=_choices(*PARTITION_NAMES)
                           | {"help": "how the training set is split over nodes"})
    classes_per_node: int = field(default=2, metadata={"help": "classes held by each node (partition=classes)"})
    alpha: float = field(default=1.0, metadata={"help": "Dirichlet concentration (partition=dirichlet)"})
    val_fraction: float = field(default=0.0, metadata={"help": "fraction of the training set held out for "
                                "validation before partitioning"})
    lr: float | None = field(default=None, metadata={"help": "step size η (default 0.05 for quadratic, "
                             "5e-3 otherwise)"})
    beta: float = field(default=0.9, metadata={"help": "momentum β"})
    weight_decay: float = field(default=1e-3, metadata={"help": "coupled weight decay λ"})
    batch_size: int = field(default=100, metadata={"help": "mini-batch per node per round (images)"})
    rounds: int | None = field(default=None, metadata={"help": "number of rounds (overrides epochs)"})
    epochs: float = field(default=1.0, metadata={"help": "epochs over each node's shard when rounds is unset"})
    seed: int = field(default=0, metadata={"help": "run seed: initial model, partitions, data order"})
    eval_every: int = field(default=0, metadata={"help": "evaluate every N rounds (0: about 10 times per run)"})
    eval_samples: int = field(default=0, metadata={"help": "test samples used in evaluation (0: all)"})
    heterogeneity: float = field(default=1.0, metadata={"help": "quadratic: spread of the nodes' local optima"})
    dim: int = field(default=10, metadata={"help": "quadratic: problem dimension"})
    dtype: str | None = field(default=None, metadata=_choices(*DTYPE_NAMES)
                              | {"help": "parameter dtype (default float64 for quadratic, float32 otherwise)"})

    def __post_init__(self) -> None:
        _check_choices(self)
        positive = {"nodes": self.nodes, "batch_size": self.batch_size, "dim": self.dim,
                    "classes_per_node": self.classes_per_node}
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"must be >= 1, got {value}", key=key)
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"must be > 0, got {self.lr}", key="lr")
        if not 0 <= self.beta < 1:
            raise ConfigError(f"must be in [0, 1), got {self.beta}", key="beta")
        if self.weight_decay < 0:
            raise ConfigError(f"must be >= 0, got {self.weight_decay}", key="weight_decay")
        if not self.alpha > 0:
            raise ConfigError(f"must be > 0, got {self.alpha}", key="alpha")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"must be in [0, 1), got {self.val_fraction}", key="val_fraction")
        if self.rounds is not None and self.rounds < 0:
            raise ConfigError(f"must be >= 0, got {self.rounds}", key="rounds")
        if not self.epochs >= 0:
            raise ConfigError(f"must be >= 0, got {self.epochs}", key="epochs")
        for key in ("eval_every", "eval_samples", "seed"):
            if getattr(self, key) < 0:
                raise ConfigError(f"must be >= 0, got {getattr(self, key)}", key=key)
        if self.heterogeneity < 0:
            raise ConfigError(f"must be >= 0, got {self.heterogeneity}", key="heterogeneity")

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
        data["topology"] = topology_fingerprint or data["topology"]
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _check_choices(obj: Any) -> None:
    for f in dataclasses.fields(obj):
        choices = f.metadata.get("choices")
        value = getattr(obj, f.name)
        if choices and value is not None and value not in choices:
            raise ConfigError(f"{value!r} is not one of {', '.join(choices)}", key=f.name)


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


def from_mapping(cls: type[T], data: dict[str, Any], *, source: str | None = None,
                 section: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types.

    Every error names ``source`` (the file) and the dotted key, so a user can fix the file directly.
    """
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        dotted = f"{section}.{raw_key}" if section else raw_key
        if key not in fields:
            raise ConfigError(f"unknown key; allowed keys: {', '.join(sorted(fields))}", file=source, key=dotted)
        try:
            kwargs[key] = _coerce(value, hints[key], dotted)
        except ConfigError as exc:
            raise ConfigError(exc.reason, file=source, key=dotted) from None
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            dotted = f"{section}.{name}" if section else name
            raise ConfigError("missing required key", file=source, key=dotted)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        bad_key = f"{section}.{exc.key}" if section and exc.key else exc.key
        raise ConfigError(exc.reason, file=source, key=bad_key) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file, turning I/O and syntax errors into ConfigError naming the file."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(p)) from None
    except PermissionError:
        raise ConfigError("file is not readable (permission denied)", file=str(p)) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, expected a TOML file", file=str(p)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=str(p)) from None


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
    from peernet.core.topology import GENERATORS, generate, load_topology

    if settings.topology in GENERATORS:
        return generate(settings.topology, settings.nodes, seed=settings.seed)
    _check_topology_name(settings.topology)
    return load_topology(settings.topology, key_files=key_files)
