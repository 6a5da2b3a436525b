"""`peernet data`: inspect datasets and how a partition spreads their classes over the nodes."""

from __future__ import annotations

import json
from typing import Any

import click

from peernet.cli.common import log_level_option, reports_errors
from peernet.data.datasets import DATASETS, load_dataset
from peernet.data.partition import PARTITIONS, class_histogram, partition_with_validation


@click.group(name="data")
def data_group() -> None:
    """Inspect datasets and node partitions."""


def _table(hist: Any, num_classes: int) -> list[str]:
    """Right-aligned rows: node, samples, one column per class, then a total row."""
    header = ["node", "samples", *(str(c) for c in range(num_classes))]
    rows = [[str(i), str(int(r.sum())), *(str(int(v)) for v in r)] for i, r in enumerate(hist)]
    totals = hist.sum(axis=0)
    rows.append(["total", str(int(totals.sum())), *(str(int(v)) for v in totals)])
    widths = [max(len(row[j]) for row in [header, *rows]) for j in range(len(header))]
    return ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in [header, *rows]]


@data_group.command("describe")
@click.option(
    "--dataset", type=click.Choice(DATASETS), required=True, help="Dataset to load (local files only)."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Directory holding the dataset files (default: $PEERNET_DATA, then /usr/share/datasets/NAME).",
)
@click.option("--nodes", type=click.IntRange(min=1), required=True, help="Number of nodes to partition over.")
@click.option(
    "--partition",
    "scheme",
    type=click.Choice(PARTITIONS),
    required=True,
    help="iid: even random split; classes: k classes per node (the paper's scheme); dirichlet: label skew.",
)
@click.option(
    "--classes-per-node",
    type=int,
    default=2,
    show_default=True,
    help="Classes each node holds (partition 'classes').",
)
@click.option(
    "--alpha",
    type=float,
    default=1.0,
    show_default=True,
    help="Dirichlet concentration; small is skewed, large is near-IID (partition 'dirichlet').",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Run seed.")
@click.option(
    "--val-fraction",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.0,
    show_default=True,
    help="Fraction of the training set held out (stratified) for validation before partitioning.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@log_level_option()
@reports_errors
def describe(
    dataset: str,
    data_dir: str | None,
    nodes: int,
    scheme: str,
    classes_per_node: int,
    alpha: float,
    seed: int,
    val_fraction: float,
    as_json: bool,
) -> None:
    """Show how many samples of each class every node gets under a partition."""
    data = load_dataset(dataset, data_dir)
    labels = data.train_y.numpy()
    parts, val_idx = partition_with_validation(
        labels,
        nodes,
        scheme,
        seed=seed,
        val_fraction=val_fraction,
        classes_per_node=classes_per_node,
        alpha=alpha,
        num_classes=data.num_classes,
    )
    hist = class_histogram(labels, parts, data.num_classes)
    used = int(hist.sum())
    if as_json:
        report = {
            "dataset": dataset,
            "partition": scheme,
            "nodes": nodes,
            "seed": seed,
            "classes_per_node": classes_per_node if scheme == "classes" else None,
            "alpha": alpha if scheme == "dirichlet" else None,
            "num_classes": data.num_classes,
            "train_samples": int(labels.size),
            "validation_samples": int(val_idx.size),
            "test_samples": int(data.test_y.numel()),
            "used_samples": used,
            "per_node": [
                {"node": i, "samples": int(row.sum()), "class_counts": [int(v) for v in row]}
                for i, row in enumerate(hist)
            ],
            "total": [int(v) for v in hist.sum(axis=0)],
        }
        click.echo(json.dumps(report, indent=2))
        return
    detail = {"classes": f" (k={classes_per_node})", "dirichlet": f" (alpha={alpha:g})"}.get(scheme, "")
    click.echo(
        f"{dataset}: {nodes} nodes, partition {scheme}{detail}, seed {seed}; "
        f"{used} of {labels.size} training samples on nodes, {val_idx.size} validation, "
        f"{data.test_y.numel()} test"
    )
    for line in _table(hist, data.num_classes):
        click.echo(line)
