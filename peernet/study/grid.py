"""Study files: a base of run settings, grid axes and an optional selection rule, validated into cells."""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peernet.config import RunSettings, from_mapping, read_toml, resolve_topology
from peernet.errors import ConfigError

SETTING_FIELDS = tuple(f.name for f in dataclasses.fields(RunSettings))
TOP_KEYS = ("name", "base", "grid", "selection")
SELECTION_KEYS = ("tune", "on_seed", "metric")
# Selection must never look at the test split: only validation metrics of the cell summary qualify.
SELECTION_METRICS = ("mean_val_accuracy", "averaged_model_val_accuracy")
# The image datasets peernet reads all have 10 classes; checked here so a bad k fails before any run.
IMAGE_CLASSES = 10
_SHORT = {"classes_per_node": "k", "alpha": "α", "heterogeneity": "ζ", "weight_decay": "wd", "batch_size": "bs"}


@dataclass(frozen=True)
class Axis:
    """One grid key: its values as the settings each one sets, and a label per value."""

    name: str
    values: tuple[dict[str, Any], ...]
    labels: tuple[str, ...]
    table: bool  # a list of tables: each value sets several settings

    @property
    def fields(self) -> set[str]:
        return {k for v in self.values for k in v}


@dataclass(frozen=True)
class Selection:
    """Tune axis ``tune`` on seed ``on_seed`` by validation ``metric``; other seeds run only at the choice."""

    tune: str
    on_seed: int
    metric: str


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: its settings, its label per axis and a stable id (readable slug + settings hash)."""

    id: str
    settings: RunSettings
    labels: dict[str, str]

    def group(self, exclude: tuple[str, ...]) -> str:
        """Key of the cells that differ only in the axes ``exclude`` (e.g. seed, the tuned axis)."""
        return " | ".join(f"{k}={v}" for k, v in self.labels.items() if k not in exclude)


@dataclass(frozen=True)
class Study:
    """A validated study file; ``cells`` is the full cartesian product, every cell a valid RunSettings."""

    name: str
    source: str
    raw: dict[str, Any]
    axes: tuple[Axis, ...]
    selection: Selection | None
    cells: tuple[Cell, ...]

    @property
    def axis_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)


def fmt_value(value: Any) -> str:
    """A short text for a setting value, distinct for distinct values (``5e-3`` → ``0.005``)."""
    if isinstance(value, float):
        return repr(value)  # shortest round-trip form: two different step sizes never share a label
    return str(value)


def describe(values: dict[str, Any]) -> str:
    """Label of a table value, e.g. ``classes k=2`` or ``dirichlet α=0.1``."""
    rest = dict(values)
    parts = [str(rest.pop("partition"))] if "partition" in rest else []
    parts += [f"{_SHORT.get(k, k)}={fmt_value(v)}" for k, v in rest.items()]
    return " ".join(parts)


def _slug(axis: Axis, index: int) -> str:
    label = axis.labels[index]
    value = axis.values[index]
    if not axis.table and not isinstance(value[axis.name], str):
        label = f"{_SHORT.get(axis.name, axis.name)}{label}"  # "lr0.005" reads better than a bare number
    label = label.replace("α", "a").replace("ζ", "z").replace("=", "")
    return re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-")


def _looks_like_path(value: str) -> bool:
    # Same rule as peernet.config: such a value names a file, relative to the study file.
    return "/" in value or value.endswith(".toml") or value.startswith(".")


def _resolve_paths(values: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    out = dict(values)
    for key in ("topology", "data_dir"):
        value = out.get(key)
        if isinstance(value, str) and _looks_like_path(value) and not Path(value).is_absolute():
            out[key] = str(base_dir / value)
    return out


def _table(data: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"expected a table [{key}], got {type(value).__name__}", file=source, key=key)
    return value


def _setting_key(raw: str, where: str, source: str) -> str:
    key = raw.replace("-", "_")
    if key not in SETTING_FIELDS:
        raise ConfigError(f"unknown key; allowed keys: {', '.join(sorted(SETTING_FIELDS))}", file=source, key=where)
    return key


def _parse_axis(raw_name: str, values: Any, source: str, base_dir: Path) -> Axis:
    where = f"grid.{raw_name}"
    if not isinstance(values, list) or not values:
        raise ConfigError("expected a non-empty list of values", file=source, key=where)
    if all(isinstance(v, dict) for v in values):
        parsed = []
        for v in values:
            if not v:
                raise ConfigError("a table value must set at least one key", file=source, key=where)
            parsed.append({_setting_key(k, f"{where}.{k}", source): x for k, x in v.items()})
        axis = Axis(raw_name, tuple(_resolve_paths(p, base_dir) for p in parsed),
                    tuple(describe(p) for p in parsed), table=True)
    elif any(isinstance(v, dict | list) for v in values):
        raise ConfigError("values must be all scalars or all tables", file=source, key=where)
    else:
        name = _setting_key(raw_name, where, source)
        axis = Axis(name, tuple(_resolve_paths({name: v}, base_dir) for v in values),
                    tuple(fmt_value(v) for v in values), table=False)
    for i, v in enumerate(axis.values):
        if v in axis.values[:i]:
            raise ConfigError(f"duplicate value {axis.labels[i]!r}", file=source, key=where)
    return axis


def _parse_selection(data: dict[str, Any], axes: tuple[Axis, ...], seeds: list[int], source: str
                     ) -> Selection | None:
    if "selection" not in data:
        return None
    sel = _table(data, "selection", source)
    for key in sel:
        if key not in SELECTION_KEYS:
            raise ConfigError(f"unknown key; allowed keys: {', '.join(SELECTION_KEYS)}", file=source,
                              key=f"selection.{key}")
    tune = sel.get("tune")
    tunable = [a.name for a in axes if a.name != "seed"]
    if tune not in tunable:
        raise ConfigError(f"must name a grid axis other than seed ({', '.join(tunable) or 'none in [grid]'}), "
                          f"got {tune!r}", file=source, key="selection.tune")
    on_seed = sel.get("on_seed", seeds[0])
    if isinstance(on_seed, bool) or on_seed not in seeds:
        raise ConfigError(f"must be one of the study's seeds {seeds}, got {on_seed!r}", file=source,
                          key="selection.on_seed")
    metric = sel.get("metric", SELECTION_METRICS[0])
    if metric not in SELECTION_METRICS:
        raise ConfigError(f"must be one of {', '.join(SELECTION_METRICS)} (validation metrics), got {metric!r}",
                          file=source, key="selection.metric")
    return Selection(tune=str(tune), on_seed=int(on_seed), metric=str(metric))


def _origin(key: str | None, axes: tuple[Axis, ...]) -> str:
    """Where in the study file a setting of a cell comes from: its grid axis, else [base]."""
    for axis in axes:
        if key in axis.fields:
            return f"grid.{axis.name}.{key}" if axis.table else f"grid.{axis.name}"
    return f"base.{key}"


def _check_cell(settings: RunSettings, labels: dict[str, str], axes: tuple[Axis, ...], source: str, *,
                topology: bool) -> None:
    """Checks RunSettings leaves to the run: k within the classes, and a topology that can be built."""
    where = ", ".join(f"{k}={v}" for k, v in labels.items())
    if settings.dataset != "quadratic" and settings.partition == "classes" \
            and settings.classes_per_node > IMAGE_CLASSES:
        raise ConfigError(f"must be at most {IMAGE_CLASSES} (the datasets' classes), got "
                          f"{settings.classes_per_node} (cell {where})", file=source,
                          key=_origin("classes_per_node", axes))
    if not topology:
        return
    try:
        resolve_topology(settings)
    except ConfigError as exc:
        raise ConfigError(f"{exc.reason} (cell {where})", file=source, key=_origin("topology", axes)) from None


def _expand(base: dict[str, Any], axes: tuple[Axis, ...], source: str) -> tuple[Cell, ...]:
    cells = []
    checked: set[tuple[str, int, int]] = set()
    for combo in itertools.product(*(range(len(a.values)) for a in axes)):
        merged = dict(base)
        for axis, i in zip(axes, combo, strict=True):
            merged.update(axis.values[i])  # a grid value overrides [base]
        labels = {a.name: a.labels[i] for a, i in zip(axes, combo, strict=True)}
        try:
            settings = from_mapping(RunSettings, merged, source=source)
        except ConfigError as exc:
            where = ", ".join(f"{k}={v}" for k, v in labels.items())
            raise ConfigError(f"{exc.reason} (cell {where})", file=source, key=_origin(exc.key, axes)) from None
        topo_key = (settings.topology, settings.nodes, settings.seed)
        # Building one graph per distinct (kind, n, seed) is enough.
        _check_cell(settings, labels, axes, source, topology=topo_key not in checked)
        checked.add(topo_key)
        slug = "_".join(_slug(a, i) for a, i in zip(axes, combo, strict=True)) or "run"
        cells.append(Cell(f"{slug[:80]}-{settings.fingerprint()[:8]}", settings, labels))
    return tuple(cells)


def load_study(path: str | Path) -> Study:
    """Read and validate a study file completely: every cell is built, nothing is run or written."""
    source = str(path)
    data = read_toml(path)
    base_dir = Path(path).parent
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"unknown key; allowed keys: {', '.join(TOP_KEYS)}", file=source, key=key)
    name = data.get("name", Path(path).stem)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("expected a non-empty string", file=source, key="name")
    base_raw = _table(data, "base", source)
    from_mapping(RunSettings, base_raw, source=source, section="base")  # errors name base.KEY as written
    base = _resolve_paths({k.replace("-", "_"): v for k, v in base_raw.items()}, base_dir)
    axes = tuple(_parse_axis(k, v, source, base_dir) for k, v in _table(data, "grid", source).items())
    owner: dict[str, str] = {}
    for axis in axes:
        for key in sorted(axis.fields):
            if key in owner:
                raise ConfigError(f"{key!r} is already set by grid axis {owner[key]!r}", file=source,
                                  key=f"grid.{axis.name}")
            owner[key] = axis.name
    cells = _expand(base, axes, source)
    seeds = sorted({c.settings.seed for c in cells})
    selection = _parse_selection(data, axes, seeds, source)
    if selection is not None:
        for cell in cells:
            where = ", ".join(f"{k}={v}" for k, v in cell.labels.items())
            if cell.settings.dataset == "quadratic":
                raise ConfigError(f"selection by {selection.metric} needs a validation split, which quadratic "
                                  f"has not (cell {where})", file=source, key=_origin("dataset", axes))
            if cell.settings.val_fraction <= 0:
                raise ConfigError(f"selection by {selection.metric} needs a validation split: set val_fraction "
                                  f"> 0 (cell {where})", file=source, key=_origin("val_fraction", axes))
    return Study(name=name, source=source, raw=data, axes=axes, selection=selection, cells=cells)
