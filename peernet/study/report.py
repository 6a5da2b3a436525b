"""Summarise a sweep, a `peernet simulate` run or a daemon run directory: a Markdown table and PNG plots."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peernet.config import ALGORITHM_NAMES, RunSettings, from_mapping, read_toml
from peernet.errors import ConfigError
from peernet.metrics.jsonl import read_jsonl
from peernet.rundir import SETTINGS_NAME, settings_digest
from peernet.study.grid import describe, fmt_value
from peernet.study.intervals import mean_interval
from peernet.study.selection_report import reported, selection_section
from peernet.study.target import target_rows, target_section

HETEROGENEITY_FIELDS = {"partition", "classes_per_node", "alpha", "heterogeneity"}
_PARTITION_KEYS: dict[str, tuple[str, ...]] = {"classes": ("partition", "classes_per_node"),
                                               "dirichlet": ("partition", "alpha")}
#: With a constant step size the nodes' accuracy swings by several points from one evaluation to the next
#: in long runs, so a run with at least 2 * LAST_EVALS evaluations also gets the mean of its last LAST_EVALS.
LAST_EVALS = 5
LATE = "late_mean_test_accuracy"
METRICS = (("mean_test_accuracy", "mean test acc (%)", 100.0),
           (LATE, f"mean test acc, last {LAST_EVALS} evals (%)", 100.0),
           ("averaged_model_test_accuracy", "averaged model acc (%)", 100.0),
           ("distance_to_optimum", "distance to optimum", 1.0))


@dataclasses.dataclass
class Run:
    """One finished run: its settings, the setting labels it is grouped by, its summary and eval curve."""

    settings: dict[str, Any]
    labels: dict[str, str]
    summary: dict[str, Any]
    curve: list[dict[str, float]]  # epoch, value (accuracy or distance to optimum), consensus
    #: What tells this method apart from another run of its algorithm in the same setting (e.g. tracker_init=average).
    variant: str = ""

    @property
    def algorithm(self) -> str:
        return str(self.settings.get("algorithm") or self.summary.get("algorithm"))

    @property
    def name(self) -> str:
        """The method as tables and plots name it: the algorithm, and its variant if it has one."""
        return f"{self.algorithm} ({self.variant})" if self.variant else self.algorithm

    @property
    def failed(self) -> bool:
        return self.summary.get("status") == "failed"

    def metric(self, key: str) -> Any:
        """A final metric from the summary, or LATE: the mean test accuracy over the last LAST_EVALS evaluations."""
        if key != LATE:
            return self.summary.get(key)
        if self.settings.get("dataset") == "quadratic" or len(self.curve) < 2 * LAST_EVALS or self.failed:
            return None
        return statistics.fmean(point["value"] for point in self.curve[-LAST_EVALS:])


def data_label(settings: dict[str, Any]) -> str:
    if settings.get("dataset") == "quadratic":
        return f"quadratic ζ={fmt_value(settings.get('heterogeneity'))}"
    keys = _PARTITION_KEYS.get(str(settings.get("partition")), ("partition",))
    return f"{settings.get('dataset')} {describe({k: settings[k] for k in keys if k in settings})}"


def heterogeneity(settings: dict[str, Any]) -> tuple[int, float, str]:
    """(family, order, label): within a family, a smaller order is more heterogeneous (k=2 before k=10)."""
    if settings.get("dataset") == "quadratic":
        h = float(settings.get("heterogeneity", 1.0))
        return 3, -h, f"ζ={fmt_value(h)}"
    if settings.get("partition") == "classes":
        return 0, float(settings["classes_per_node"]), f"k={settings['classes_per_node']}"
    if settings.get("partition") == "dirichlet":
        return 1, float(settings["alpha"]), f"α={fmt_value(settings['alpha'])}"
    return 2, 0.0, "iid"


def _curve(records: list[dict[str, Any]]) -> list[dict[str, float]]:
    out = []
    for r in records:
        value = r.get("mean_test_accuracy", r.get("distance_to_optimum"))
        if r.get("event") == "eval" and value is not None:
            out.append({"epoch": float(r.get("epoch") or 0.0), "value": float(value),
                        "consensus": float(r.get("consensus_distance") or float("nan"))})
    return out


def _node_curve(node_dirs: list[Path]) -> list[dict[str, float]]:
    """Daemon runs: per evaluated round, the mean accuracy over nodes (the worst distance for quadratic)."""
    by_round: dict[int, list[dict[str, Any]]] = {}
    for d in node_dirs:
        for r in read_jsonl(d / "metrics.jsonl") if (d / "metrics.jsonl").exists() else []:
            if r.get("event") == "eval":
                by_round.setdefault(int(r["round"]), []).append(r)
    out = []
    for _, recs in sorted(by_round.items()):
        accs = [r["test_accuracy"] for r in recs if r.get("test_accuracy") is not None]
        dists = [r["distance_to_optimum"] for r in recs if r.get("distance_to_optimum") is not None]
        # A daemon knows only its neighbours' models: "neighbour_distance" (named "consensus_distance" in older runs).
        found = (r.get("neighbour_distance", r.get("consensus_distance")) for r in recs)
        cons: list[float] = [c for c in found if c is not None]
        if accs or dists:
            out.append({"epoch": float(recs[0].get("epoch") or 0.0),
                        "value": sum(accs) / len(accs) if accs else max(dists),
                        "consensus": sum(cons) / len(cons) if cons else float("nan")})
    return out


def _json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def _method_axes(meta: dict[str, Any]) -> set[str]:
    """Grid axes of tables that set the algorithm and nothing that tells two runs of one algorithm apart.

    Each method at its own step size names the method: the algorithm column and the plots' lines show it,
    so the axis must not split the setting into one per method. An axis that lists an algorithm twice (say
    at two step sizes) stays a setting, or the two would be averaged as if they were seeds.
    """
    return set(_method_variants(meta))


def _variant(label: str) -> str:
    """What a method axis's value sets besides the algorithm (``algorithm=momentum-tracking tracker_init=average``
    → ``tracker_init=average``)."""
    return " ".join(part for part in label.split() if not part.startswith("algorithm="))


def _method_variants(meta: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Method axes (see _method_axes), each with the variant of every value: empty where the algorithm alone
    names the method; the rest of the value where it lists an algorithm twice apart from step sizes (two starts of
    Momentum Tracking are two methods; two step sizes of it stay a setting, reported apart)."""
    out = {}
    for axis in meta.get("axes", []):
        if "algorithm" not in axis.get("fields", ()):
            continue
        per_value = {c["labels"].get(axis["name"]): c["settings"].get("algorithm") for c in meta.get("cells", [])}
        if len(set(per_value.values())) == len(per_value):
            out[str(axis["name"])] = {str(label): "" for label in per_value}
        elif "lr" not in axis.get("fields", ()):
            out[str(axis["name"])] = {str(label): _variant(str(label)) for label in per_value}
    return out


def _expected_lr(settings: dict[str, Any]) -> float | None:
    """The step size a settings mapping stands for (an unset lr: the dataset's default); None if unreadable."""
    try:
        return RunSettings(dataset=settings.get("dataset") or "fashion-mnist", lr=settings.get("lr")).step_size
    except ConfigError:
        return None


def check_summary(where: Path, summary: dict[str, Any], settings: dict[str, Any], source: str) -> None:
    """Refuse a summary that another run wrote: its algorithm, dataset, step size, node count or settings
    digest (peernet/rundir.py) differs from the settings beside it. A rerun that failed into an old directory
    leaves exactly that, and its row would mix one run's results with another's settings."""
    if not summary or not settings:  # nothing to compare (no settings.json: a collected run, an older version)
        return
    found = [f"{key} {summary[key]!r} in summary.json, {settings[key]!r} in {source}"
             for key in ("algorithm", "dataset")
             if summary.get(key) is not None and settings.get(key) is not None and summary[key] != settings[key]]
    lr = _expected_lr(settings)
    if summary.get("lr") is not None and lr is not None and not math.isclose(float(summary["lr"]), lr, rel_tol=1e-9):
        found.append(f"lr {summary['lr']} in summary.json, {lr} in {source}")
    if "settings_digest" in settings:  # written by this version: nodes resolved, every setting digested
        if summary.get("nodes") is not None and settings.get("nodes") not in (None, summary["nodes"]):
            found.append(f"{summary['nodes']} nodes in summary.json, {settings['nodes']} in {source}")
        if summary.get("settings_digest") not in (None, settings["settings_digest"]):
            found.append(f"settings digest {summary['settings_digest']} in summary.json, "
                         f"{settings['settings_digest']} in {source} (seed, rounds, β or another setting differs)")
    if found:
        raise ConfigError(f"summary.json was written by another run than {source} describes (left by an earlier "
                          f"run into this directory?): {'; '.join(found)}. Run again into a new directory or with "
                          "--force", file=str(where))


def _sweep_runs(run_dir: Path) -> tuple[str, list[Run], dict[str, Any]]:
    meta = _json(run_dir / "sweep.json")
    sel = meta.get("selection")
    hidden = {"algorithm", "seed"} | ({sel["tune"]} if sel else set())
    variants = _method_variants(meta)
    hidden |= set(variants)
    runs = []
    for cell in meta["cells"]:
        cell_dir = run_dir / "cells" / cell["id"]
        if not reported(cell) or not (cell_dir / "summary.json").is_file():
            continue
        summary = _json(cell_dir / "summary.json")
        check_summary(cell_dir, summary, _cell_record(cell["settings"]), "sweep.json")
        metrics = read_jsonl(cell_dir / "metrics.jsonl") if (cell_dir / "metrics.jsonl").exists() else []
        variant = " ".join(v for axis, of in variants.items() if (v := of.get(cell["labels"].get(axis), "")))
        runs.append(Run(cell["settings"], {k: v for k, v in cell["labels"].items() if k not in hidden},
                        summary, _curve(metrics), variant))
    return "sweep", runs, meta


def _cell_record(settings: dict[str, Any]) -> dict[str, Any]:
    """A sweep cell's settings with their digest, when they still parse (its ``nodes`` is not resolved: a
    topology file sets the real count, so it is left out of the comparison)."""
    try:
        given = {k: v for k, v in settings.items() if v is not None}  # as in TOML: None is "unset", the default
        digest = settings_digest(from_mapping(RunSettings, given, source="sweep.json"))
    except (ConfigError, TypeError):
        return settings
    return {k: v for k, v in settings.items() if k != "nodes"} | {"settings_digest": digest}


def _daemon_run(run_dir: Path, summary: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, float]]]:
    raw = read_toml(run_dir / "run.toml") if (run_dir / "run.toml").is_file() else {}
    toml_settings = {k.replace("-", "_"): v for k, v in raw.items()}
    check_summary(run_dir, summary, toml_settings, "run.toml")
    record = _json(run_dir / SETTINGS_NAME)
    check_summary(run_dir, summary, record, SETTINGS_NAME)
    node_dirs = sorted(p for p in (run_dir / "nodes").iterdir() if p.is_dir())
    if isinstance(record.get("nodes"), int):
        strays = [d.name for d in node_dirs if not d.name.removeprefix("node").isdigit()
                  or int(d.name.removeprefix("node")) >= record["nodes"]]
        if strays:
            raise ConfigError(f"nodes/{{{', '.join(strays)}}} are not nodes of this {record['nodes']}-node run (left "
                              "by an earlier run into this directory?). Run again into a new directory or with "
                              "--force", file=str(run_dir))
    from_summary = {k: summary[k] for k in ("algorithm", "dataset", "lr") if summary.get(k) is not None}
    return dataclasses.asdict(RunSettings()) | from_summary | toml_settings, _node_curve(node_dirs)


def load_runs(run_dir: Path) -> tuple[str, list[Run], dict[str, Any]]:
    """The runs of a sweep, simulate or daemon run directory, with the kind and the sweep's metadata.

    A summary that does not belong to the settings beside it (check_summary) is refused, never reported.
    """
    if (run_dir / "sweep.json").is_file():
        return _sweep_runs(run_dir)
    summary = _json(run_dir / "summary.json")
    if (run_dir / SETTINGS_NAME).is_file() and (run_dir / "metrics.jsonl").is_file():
        record = _json(run_dir / SETTINGS_NAME)
        check_summary(run_dir, summary, record, SETTINGS_NAME)
        settings = dataclasses.asdict(RunSettings()) | record
        curve = _curve(read_jsonl(run_dir / "metrics.jsonl"))
        kind = "simulate"
    elif (run_dir / "nodes").is_dir():
        settings, curve = _daemon_run(run_dir, summary)
        kind = "daemons"
        if summary.get("mean_test_accuracy") is None and curve and settings["dataset"] != "quadratic":
            summary["mean_test_accuracy"] = curve[-1]["value"]  # no merged summary: the nodes' last evaluation
    else:
        raise ConfigError("not a sweep (sweep.json), `peernet simulate --out` (settings.json, metrics.jsonl) or "
                          "daemon run directory (nodes/node*/metrics.jsonl)", file=str(run_dir))
    labels = {"topology": str(summary.get("topology") or settings["topology"]), "data": data_label(settings)}
    return kind, [Run(settings, labels, summary, curve)], {}


def _stats(values: list[Any]) -> dict[str, float] | None:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    stats = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}
    interval = mean_interval(vals)
    if interval is not None:
        stats["ci_low"], stats["ci_high"] = interval
    return stats


def make_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per (algorithm, setting): mean and sample std over seeds of each final metric."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.name, json.dumps(run.labels)), []).append(run)
    rank = {name: i for i, name in enumerate(ALGORITHM_NAMES)}
    rows = []
    def order(item: tuple[tuple[str, str], list[Run]]) -> tuple[int, str]:
        return rank.get(item[1][0].algorithm, 99), item[0][0]

    for (algorithm, _), members in sorted(groups.items(), key=order):
        lrs = sorted({float(r.summary["lr"]) for r in members if r.summary.get("lr") is not None})
        rows.append({"algorithm": algorithm, "labels": members[0].labels, "lr": lrs, "seeds": len(members),
                     "failed": sum(r.failed for r in members),
                     **{key: _stats([r.metric(key) for r in members]) for key, _, _ in METRICS}})
    return rows


def _pm(stats: dict[str, float] | None, scale: float) -> str:
    if stats is None:
        return "–"
    if scale == 1.0:
        return f"{stats['mean']:.3g}" + (f" ± {stats['std']:.2g}" if stats["n"] > 1 else "")
    return f"{stats['mean'] * scale:.2f}" + (f" ± {stats['std'] * scale:.2f}" if stats["n"] > 1 else "")


def _interval(stats: dict[str, float] | None) -> str:
    if not stats or "ci_low" not in stats:
        return "–"
    return f"{stats['ci_low'] * 100:.2f} – {stats['ci_high'] * 100:.2f}"


def markdown_table(rows: list[dict[str, Any]], lr_header: str = "lr") -> str:
    label_keys = [k for k in dict.fromkeys(k for row in rows for k in row["labels"]) if k != "lr"]  # own column
    metrics = [(key, title, scale) for key, title, scale in METRICS if any(row[key] for row in rows)]
    # The headline metric's 95% t interval over the seeds, where there are several.
    ci = any(row["mean_test_accuracy"] and "ci_low" in row["mean_test_accuracy"] for row in rows)
    header = ["algorithm", *label_keys, lr_header, "seeds", *(title for _, title, _ in metrics),
              *(["mean test acc, 95% interval (%)"] if ci else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        seeds = str(row["seeds"]) + (f" ({row['failed']} failed)" if row["failed"] else "")
        cells = [row["algorithm"], *(row["labels"].get(k, "") for k in label_keys),
                 ", ".join(fmt_value(v) for v in row["lr"]) or "–", seeds,
                 *(_pm(row[key], scale) for key, _, scale in metrics),
                 *([_interval(row["mean_test_accuracy"])] if ci else [])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _panels(groups: dict[str, list[Run]], path: Path, ylabel: str, draw: Callable[[Any, list[Run]], None],
            logy: bool = False, xlabel: str = "epoch") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(groups)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (title, runs) in zip(axes.flat, groups.items(), strict=False):
        draw(ax, runs)
        ax.set(title=title or "all runs", xlabel=xlabel, ylabel=ylabel)
        if logy:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _color(algorithm: str) -> str:
    rank = ALGORITHM_NAMES.index(algorithm) if algorithm in ALGORITHM_NAMES else len(ALGORITHM_NAMES)
    return f"C{rank % 10}"


def _by_algorithm(runs: list[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (_color(r.algorithm), r.name)):
        out.setdefault(run.name, []).append(run)
    return out


def _curves(key: str) -> Callable[[Any, list[Run]], None]:
    """Mean over seeds of a curve (runs of one setting share the evaluation schedule), ± std shaded."""
    import numpy as np

    def draw(ax: Any, runs: list[Run]) -> None:
        for algorithm, members in _by_algorithm(runs).items():
            curves = [r.curve for r in members if r.curve]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            x = [p["epoch"] for p in curves[0][:length]]
            ys = np.array([[p[key] for p in c[:length]] for c in curves])
            mean = ys.mean(axis=0)
            ax.plot(x, mean, marker="o", ms=3, color=_color(algorithm), label=f"{algorithm} (n={len(curves)})")
            if len(curves) > 1:
                std = ys.std(axis=0)
                ax.fill_between(x, mean - std, mean + std, color=_color(algorithm), alpha=0.2)
    return draw


def _heterogeneity_plot(runs: list[Run], meta: dict[str, Any], path: Path, key: str, ylabel: str,
                        logy: bool) -> Path | None:
    """Final metric against heterogeneity, most heterogeneous first; one line per method and partition family."""
    het_axes = {a["name"] for a in meta["axes"] if HETEROGENEITY_FIELDS & set(a.get("fields", []))}
    points = sorted({heterogeneity(r.settings) for r in runs})
    if not het_axes or len(points) < 2:
        return None
    position = {p: i for i, p in enumerate(points)}
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(", ".join(v for k, v in run.labels.items() if k not in het_axes), []).append(run)

    def draw(ax: Any, members: list[Run]) -> None:
        for algorithm, mine in _by_algorithm(members).items():
            by_point: dict[tuple[int, float, str], list[Run]] = {}
            for run in mine:
                by_point.setdefault(heterogeneity(run.settings), []).append(run)
            label: str | None = algorithm
            for family in sorted({p[0] for p in by_point}):
                stats = [(p, _stats([r.summary.get(key) for r in by_point[p]])) for p in sorted(by_point)
                         if p[0] == family]
                shown = [(p, s) for p, s in stats if s is not None]
                if shown:
                    ax.errorbar([position[p] for p, _ in shown], [s["mean"] for _, s in shown],
                                yerr=[s["std"] for _, s in shown], marker="o", ms=4, capsize=3,
                                color=_color(algorithm), label=label)
                    label = None
        ax.set_xticks(range(len(points)), [p[2] for p in points])

    return _panels(groups, path, ylabel, draw, logy=logy, xlabel="heterogeneity (most → least)")


def write_report(run_dir: str | Path, out: str | Path | None = None, target: float | None = None) -> dict[str, Any]:
    """Write report.md and the plots under ``out`` (default: the run directory); return rows and file paths.
    With ``target`` (an accuracy in (0, 1)) also how many rounds and bytes each setting needed to reach it."""
    src = Path(run_dir)
    if not src.is_dir():
        raise ConfigError("no such run directory", file=str(src))
    kind, runs, meta = load_runs(src)
    if not runs:
        raise ConfigError("no finished runs to report yet", file=str(src))
    dest = Path(out) if out is not None else src
    dest.mkdir(parents=True, exist_ok=True)
    rows = make_rows(runs)
    quadratic = all(r.settings.get("dataset") == "quadratic" for r in runs)
    ylabel = "distance to optimum" if quadratic else "mean test accuracy"
    sel = meta.get("selection")
    table = markdown_table(rows, "lr (chosen)" if sel else "lr")
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(", ".join(run.labels.values()), []).append(run)
    files = [_panels(groups, dest / "accuracy.png", ylabel, _curves("value"), logy=quadratic),
             _panels(groups, dest / "consensus.png", "neighbour distance" if kind == "daemons" else
                     "consensus distance", _curves("consensus"), logy=True)]
    if kind == "sweep":
        key = "distance_to_optimum" if quadratic else "mean_test_accuracy"
        het = _heterogeneity_plot(runs, meta, dest / "heterogeneity.png", key, "final " + ylabel, quadratic)
        files += [het] if het else []
    title = meta.get("name") or src.name
    notes = [f"{kind} run directory `{src}`; mean ± sample std over seeds of the final evaluation; the 95% interval "
             "of the mean is Student's t over the seeds."]
    planned = sum(map(reported, meta.get("cells", [])))
    if planned > len(runs):
        notes.append(f"Only {len(runs)} of {planned} cells are finished: run the sweep again to complete it.")
    chosen = _json(src / "selection.json") if sel else {}
    if chosen and sel:
        notes.append(f"{sel['tune']} chosen per setting on seed {sel['on_seed']} by {sel['metric']}: see "
                     "Step-size selection below.")
    if kind == "daemons":
        notes.append("consensus.png of a daemon run shows the neighbour distance: each node's mean squared distance "
                     "to its neighbours' models, averaged over nodes (summary.json's consensus_distance, "
                     "mean_i ‖x_i − x̄‖², needs every model at once).")
    sections = [selection_section(chosen)] if chosen else []
    if target is not None:
        sections.append(target_section(runs, target))
    text = "\n\n".join([f"# Report: {title}", *notes, table, "Plots: " + ", ".join(f.name for f in files),
                        *sections]) + "\n"
    (dest / "report.md").write_text(text)
    return {"kind": kind, "table": table, "rows": rows, "files": [str(f) for f in [dest / "report.md", *files]],
            "selection": chosen.get("choices"), "target": None if target is None else target_rows(runs, target)}
