"""Study files: a base of run settings, grid axes and an optional selection rule, validated into cells."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from peernet.config import RunSettings, from_mapping, read_toml, resolve_topology
from peernet.errors import ConfigError

SETTING_FIELDS = tuple(f.name for f in dataclasses.fields(RunSettings))
TOP_KEYS = ("name", "base", "grid", "selection")
SELECTION_KEYS = ("tune", "on_seed", "metric", "method", "budgets", "unit", "keep")
HALVING_KEYS = ("budgets", "unit", "keep")
# Selection must never look at the test split: validation accuracies of the image datasets (higher is better)
# and, for the quadratic task, which has no data to split, its exact training objective at the averaged model.
SELECTION_METRICS = ("mean_val_accuracy", "averaged_model_val_accuracy", "averaged_model_loss")
LOWER_IS_BETTER = frozenset({"averaged_model_loss"})
QUADRATIC_METRICS = frozenset({"averaged_model_loss"})
SELECTION_METHODS = ("full", "halving")
BUDGET_UNITS = ("epochs", "rounds")
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
    """Tune axis ``tune`` on seed ``on_seed`` by validation ``metric``; other seeds run only at the choice.

    ``method`` "full" trains every value at the cells' own budget; "halving" (successive halving) first trains
    them for ``budgets`` (in ``unit``), keeping the best ``keep`` fraction after each, and only the survivors
    at the full budget.
    """

    tune: str
    on_seed: int
    metric: str
    method: str = "full"
    budgets: tuple[float, ...] = ()
    unit: str = "epochs"
    keep: float = 0.5


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
    method = sel.get("method", SELECTION_METHODS[0])
    if method not in SELECTION_METHODS:
        raise ConfigError(f"must be one of {', '.join(SELECTION_METHODS)}, got {method!r}", file=source,
                          key="selection.method")
    rule = Selection(tune=str(tune), on_seed=int(on_seed), metric=str(metric))
    if method == "full":
        for key in HALVING_KEYS:
            if key in sel:
                raise ConfigError('only with method = "halving"', file=source, key=f"selection.{key}")
        return rule
    unit = sel.get("unit", BUDGET_UNITS[0])
    if unit not in BUDGET_UNITS:
        raise ConfigError(f"must be one of {', '.join(BUDGET_UNITS)}, got {unit!r}", file=source,
                          key="selection.unit")
    return dataclasses.replace(rule, method="halving", unit=str(unit), keep=_parse_keep(sel.get("keep"), source),
                               budgets=_parse_budgets(sel.get("budgets"), str(unit), source))


def _parse_budgets(value: Any, unit: str, source: str) -> tuple[float, ...]:
    kind = int if unit == "rounds" else (int, float)
    if not isinstance(value, list) or not value or any(isinstance(b, bool) or not isinstance(b, kind)
                                                       or not math.isfinite(b) or b <= 0 for b in value):
        what = "whole numbers of rounds" if unit == "rounds" else "numbers of epochs"
        raise ConfigError(f"expected a non-empty list of positive {what}, got {value!r}", file=source,
                          key="selection.budgets")
    if any(b <= a for a, b in itertools.pairwise(value)):
        raise ConfigError(f"must increase from rung to rung, got {value!r}", file=source, key="selection.budgets")
    return tuple(value)


def _parse_keep(value: Any, source: str) -> float:
    """The fraction of a rung that goes on: a number, or a fraction written as a string ("1/3")."""
    if value is None:
        return 0.5
    try:
        keep = float(Fraction(value)) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError):
        keep = math.nan
    if isinstance(value, bool) or not 0 < keep < 1:
        raise ConfigError(f"must be a fraction between 0 and 1 (e.g. 0.5 or \"1/3\"), got {value!r}", file=source,
                          key="selection.keep")
    return keep


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
        _check_selection(selection, cells, axes, source)
    return Study(name=name, source=source, raw=data, axes=axes, selection=selection, cells=cells)


def run_length(settings: RunSettings) -> tuple[float, str]:
    """A cell's budget and its unit: its rounds when set (they override epochs), else its epochs."""
    if settings.rounds is not None:
        return float(settings.rounds), "rounds"
    return float(settings.epochs), "epochs"


def _check_selection(selection: Selection, cells: tuple[Cell, ...], axes: tuple[Axis, ...], source: str) -> None:
    """Every cell can be scored by the metric, and halving's budgets fit the cells they shorten."""
    for cell in cells:
        where = ", ".join(f"{k}={v}" for k, v in cell.labels.items())
        quadratic = cell.settings.dataset == "quadratic"
        if quadratic and selection.metric not in QUADRATIC_METRICS:
            raise ConfigError(f"selection by {selection.metric} needs a validation split, which quadratic has "
                              f"not (its metric: averaged_model_loss) (cell {where})", file=source,
                              key=_origin("dataset", axes))
        if not quadratic and selection.metric in QUADRATIC_METRICS:
            raise ConfigError(f"{selection.metric} is the quadratic task's objective; select on a validation "
                              f"accuracy (cell {where})", file=source, key="selection.metric")
        if not quadratic and cell.settings.val_fraction <= 0:
            raise ConfigError(f"selection by {selection.metric} needs a validation split: set val_fraction "
                              f"> 0 (cell {where})", file=source, key=_origin("val_fraction", axes))
        if selection.method != "halving":
            continue
        # A budget in epochs only shortens a run that is counted in epochs: rounds, when set, override them.
        length, unit = run_length(cell.settings)
        if unit != selection.unit:
            fix = 'unit = "rounds"' if unit == "rounds" else "rounds in the cells"
            raise ConfigError(f"budgets in {selection.unit}, but the cell's length is set in {unit}: set {fix} "
                              f"(cell {where})", file=source, key="selection.unit")
        if selection.budgets[-1] > length:
            raise ConfigError(f"a rung may not be longer than the cell's own {length:g} {unit}, got "
                              f"{selection.budgets[-1]:g} (cell {where})", file=source, key="selection.budgets")
