"""``peernet topology``: generate topology files and check them (validity, degree, diameter, spectral gap)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from peernet.cli.common import log_level_option, reports_errors
from peernet.core.topology import GENERATORS, Topology, generate
from peernet.core.topology_gen import edge_count
from peernet.errors import TopologyError, escaped
from peernet.topology_files import load_topology, save_topology

#: The largest graph `generate` builds, checked before building it: the file it writes stays under the loader's
#: 64 MiB (1,000,000 nodes and 2,000,000 edges of 6-digit ids come to about 60 MB). A 100,000-node random or
#: exponential graph has 1.2 or 1.7 million edges; a complete graph is refused above 2,000 nodes.
MAX_GENERATED_NODES = 1_000_000
MAX_GENERATED_EDGES = 2_000_000
_SEEDS = click.IntRange(min=0, max=2**64 - 1)  # the random graph's SplitMix64 keeps 64 bits of the seed


def _summary(topo: Topology) -> dict[str, Any]:
    lo, hi = topo.degree_range()
    return {
        "name": topo.name,
        "nodes": topo.n,
        "edges": len(topo.edges),
        "weights": topo.weights,
        "degree_range": [lo, hi],
        # The diameter, or null when the exact search ran out of budget; then "diameter_bounds" says [lower, upper].
        **topo.diameter_bounds().as_json(),
        "spectral_gap": topo.spectral_gap(),
        "fingerprint": topo.fingerprint(),
    }


def _node_keys(topo: Topology, keys_dir: Path) -> dict[int, str]:
    from peernet.security.cluster import key_owners, node_key_name
    from peernet.security.keys import PUBLIC_SUFFIX, load_public_key

    keys = {i: load_public_key(keys_dir / f"{node_key_name(i)}{PUBLIC_SUFFIX}").decode() for i in topo.ids}
    key_owners(topo.with_keys(keys), source=str(keys_dir))  # two nodes with one key pair: refuse, as a node would
    return keys


def _check_size(kind: str, n: int) -> None:
    """Refuse a graph too large to build, write and load back, before spending the time and memory on it."""
    edges = edge_count(kind, n)  # the same count the core's own, higher cap (what fits in memory) uses
    if edges > MAX_GENERATED_EDGES:
        raise TopologyError(f"--nodes {n}: a {kind} graph of {n:,} nodes has about {edges:,} edges, more than the "
                            f"{MAX_GENERATED_EDGES:,} a generated topology may have")


def _gap(value: float) -> str:
    # '#' keeps trailing zeros, so a gap of 1 shows as 1.000 and columns line up: 4 significant digits.
    return f"{value:#.4g}"


@click.group("topology")
def topology_group() -> None:
    """Create and inspect topology files (nodes, edges and mixing weights)."""


@topology_group.command("generate")
@click.argument("kind", type=click.Choice(GENERATORS))
@click.option(
    "--nodes", "-n", "n", type=click.IntRange(min=1, max=MAX_GENERATED_NODES), required=True,
    help=f"Number of nodes (ids 0..N-1), at most {MAX_GENERATED_NODES:,}.",
)
@click.option(
    "--seed",
    type=_SEEDS,
    default=0,
    show_default=True,
    help="Seed of the 'random' graph, 0 to 2**64-1 (ignored by other kinds).",
)
@click.option(
    "--weights",
    type=click.Choice(["metropolis-hastings", "uniform"]),
    default="metropolis-hastings",
    show_default=True,
    help="Mixing-weight rule: 1/(1+max(deg_i, deg_j)) per edge, or 1/(1+max degree) on every edge.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    required=True,
    help="Topology TOML file to write (a regular file there is replaced atomically; anything else is refused).",
)
@click.option(
    "--keys",
    "keys_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Directory of CURVE public keys node<id>.key (from `peernet keygen`): write each node's key inline.",
)
@log_level_option()
@reports_errors
def generate_cmd(kind: str, n: int, seed: int, weights: str, output: str, keys_dir: str | None) -> None:
    """Write a KIND topology with N nodes to a TOML file.

    KIND is one of: ring, torus (2-D, N = rows x cols with both >= 3), hypercube (N a power of 2),
    exponential (i joined to i +- 2^k), complete, star (node 0 is the hub), random (seeded, connected).
    With --keys every node gets the public key of DIR/node<id>.key inline (public_key = "..."), so the
    file alone is enough on hosts that hold no other node's key file.
    """
    if not output:
        raise click.BadParameter("the path is empty", param_hint="'--output' / '-o'")
    _check_size(kind, n)
    topo = generate(kind, n, seed=seed, weights=weights)
    if keys_dir is not None:
        topo = topo.with_keys(_node_keys(topo, Path(keys_dir)))
    save_topology(topo, output)
    lo, hi = topo.degree_range()
    click.echo(
        f"wrote {escaped(output)}: {topo.name}, {topo.n} nodes, {len(topo.edges)} edges, degree {lo}-{hi}, "
        f"spectral gap {_gap(topo.spectral_gap())}"
    )


@topology_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@log_level_option()
@reports_errors
def check_cmd(file: str, as_json: bool) -> None:
    """Validate a topology FILE and report its size, degrees, diameter and spectral gap.

    Exits 0 when the file is valid; otherwise prints the problem to stderr and exits 2. The spectral gap
    (1 - |lambda_2| of the mixing matrix) governs how fast gossip averages: larger is faster.
    """
    topo = load_topology(file)
    info = _summary(topo)
    if as_json:
        click.echo(json.dumps(info))
        return
    lo, hi = info["degree_range"]
    rows = [
        ("name", escaped(info["name"]) or "(unnamed)"),  # free text from the file: no terminal escapes
        ("nodes", info["nodes"]),
        ("edges", info["edges"]),
        ("weights", info["weights"]),
        ("degree range", f"{lo}-{hi}"),
        ("diameter", str(topo.diameter_bounds())),  # "6", or "5–8 (bounds; exact search stopped after 19 BFS)"
        ("spectral gap", _gap(info["spectral_gap"])),
        ("fingerprint", info["fingerprint"]),
    ]
    for label, value in rows:
        click.echo(f"{label + ':':<14}{value}")
