"""Topologies: nodes, undirected edges, the mixing matrix W, graph metrics and the TOML file format.

A topology file (full reference in docs/topology.md)::

    name = "ring-4"                          # optional free text
    weights = "metropolis-hastings"          # or "uniform" or "explicit" (default metropolis-hastings)
    edges = [[0, 1], [1, 2], [2, 3], [0, 3]]
    explicit_weights = [[0, 1, 0.25], ...]   # weights = "explicit" only: [a, b, W_ab]; [a, a, W_aa] optional

    [[nodes]]
    id = 0
    endpoint = "tcp://127.0.0.1:5550"        # optional static endpoint
    public_key = "<40 z85 characters>"       # optional CURVE public key

Every defect (unknown node, self-loop, duplicate edge or node, disconnected graph, bad explicit weights,
unknown keys, wrong types) raises TopologyError naming the file, the key and the problem.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peernet.core.topology_gen import GENERATORS, generator_edges
from peernet.errors import TopologyError

__all__ = [
    "GENERATORS",
    "WEIGHT_RULES",
    "NodeSpec",
    "Topology",
    "generate",
    "load_topology",
    "mh_weight",
    "parse_topology",
    "save_topology",
]

WEIGHT_RULES: tuple[str, ...] = ("metropolis-hastings", "uniform", "explicit")
STOCHASTIC_TOL = 1e-9  # how far a row of explicit weights may be from summing to 1
_SYMMETRY_TOL = 1e-12  # W_ab and W_ba listed separately must agree to rounding
_Z85 = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")
_ENDPOINT = re.compile(r"[a-z][a-z0-9+.-]*://\S+")
_TOP_KEYS = ("name", "weights", "edges", "explicit_weights", "nodes")
_NODE_KEYS = ("id", "endpoint", "public_key")


def mh_weight(deg_a: int, deg_b: int) -> float:
    """Metropolis–Hastings weight 1 / (1 + max(deg_a, deg_b)) of an edge between nodes of these degrees."""
    if deg_a < 0 or deg_b < 0:
        raise TopologyError(f"degrees must be non-negative, got {deg_a} and {deg_b}")
    return 1.0 / (1 + max(deg_a, deg_b))


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _show(entry: object) -> str:
    """Render a tuple or list entry the way it is written in TOML, e.g. ``[0, 1]``."""
    if isinstance(entry, list | tuple):
        return "[" + ", ".join(repr(v) for v in entry) + "]"
    return repr(entry)


def _ids(ids: Iterable[int], limit: int = 8) -> str:
    ids = list(ids)
    shown = ", ".join(map(str, ids[:limit]))
    return f"[{shown}, ... ({len(ids)} nodes)]" if len(ids) > limit else f"[{shown}]"


@dataclass(frozen=True)
class NodeSpec:
    """One node: its id, and optionally where it listens and its CURVE public key."""

    id: int
    endpoint: str | None = None
    public_key: str | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.id) or self.id < 0:
            raise TopologyError(f"node id must be a non-negative integer, got {self.id!r}", key="id")
        if self.endpoint is not None and not (
            isinstance(self.endpoint, str) and _ENDPOINT.fullmatch(self.endpoint)
        ):
            raise TopologyError(
                f"endpoint must be a string like 'tcp://10.0.0.3:5555', got {self.endpoint!r}", key="endpoint"
            )
        key = self.public_key
        if key is not None:
            if not isinstance(key, str) or len(key) != 40:
                shown = f"{len(key)} characters" if isinstance(key, str) else repr(key)
                raise TopologyError(f"public_key must be 40 z85 characters, got {shown}", key="public_key")
            bad = sorted(set(key) - _Z85)
            if bad:
                raise TopologyError(
                    f"public_key has characters outside z85: {''.join(bad)!r}", key="public_key"
                )


@dataclass(frozen=True)
class Topology:
    """A validated, canonical graph with its mixing rule; construct it directly, parse it or generate it.

    The constructor normalises (nodes sorted by id, edges as sorted (a, b) with a < b, explicit weights as
    one (a, b, w) per edge plus one (a, a, w) per node) and raises TopologyError on any defect, so every
    Topology in the program is connected and has a symmetric, doubly stochastic W.
    """

    nodes: tuple[NodeSpec, ...]
    edges: tuple[tuple[int, int], ...]
    weights: str = "metropolis-hastings"
    explicit: tuple[tuple[int, int, float], ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TopologyError(f"name must be a string, got {self.name!r}", key="name")
        if not isinstance(self.weights, str) or self.weights not in WEIGHT_RULES:
            allowed = ", ".join(map(repr, WEIGHT_RULES))
            raise TopologyError(f"weights must be one of {allowed}, got {self.weights!r}", key="weights")
        if not isinstance(self.nodes, list | tuple) or not self.nodes:
            raise TopologyError("no nodes: a topology needs at least one node", key="nodes")
        seen: set[int] = set()
        for spec in self.nodes:
            if not isinstance(spec, NodeSpec):
                raise TopologyError(f"nodes must be NodeSpec objects, got {spec!r}", key="nodes")
            if spec.id in seen:
                raise TopologyError(f"duplicate node id {spec.id}", key="nodes")
            seen.add(spec.id)
        object.__setattr__(self, "nodes", tuple(sorted(self.nodes, key=lambda s: s.id)))
        object.__setattr__(self, "edges", _canonical_edges(self.edges, seen))
        _check_connected(self.ids, self.edges)
        if self.weights == "explicit":
            object.__setattr__(self, "explicit", _canonical_explicit(self.explicit, self.ids, self.edges))
        elif not self.explicit:
            object.__setattr__(self, "explicit", ())  # so an empty list compares and hashes like ()
        else:
            raise TopologyError(
                f'explicit weights are given but weights = {self.weights!r}; set weights = "explicit" '
                "to use them or remove them",
                key="explicit_weights",
            )

    # -- structure ---------------------------------------------------------------------------------------

    @property
    def n(self) -> int:
        return len(self.nodes)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(s.id for s in self.nodes)

    @cached_property
    def _index(self) -> dict[int, int]:
        return {s.id: i for i, s in enumerate(self.nodes)}

    @cached_property
    def _adj(self) -> dict[int, tuple[int, ...]]:
        adj: dict[int, list[int]] = {i: [] for i in self.ids}
        for a, b in self.edges:
            adj[a].append(b)
            adj[b].append(a)
        return {i: tuple(sorted(nb)) for i, nb in adj.items()}

    def index_of(self, node_id: int) -> int:
        """Position of ``node_id`` in ``self.nodes`` (also its row and column in the mixing matrix)."""
        try:
            return self._index[node_id]
        except (KeyError, TypeError):
            where = f" {self.name!r}" if self.name else ""
            raise TopologyError(
                f"node {node_id!r} is not in topology{where} (ids: {_ids(self.ids)})"
            ) from None

    def neighbours(self, node_id: int) -> tuple[int, ...]:
        return self._adj[self.ids[self.index_of(node_id)]]

    def degree(self, node_id: int) -> int:
        return len(self.neighbours(node_id))

    def degree_range(self) -> tuple[int, int]:
        degrees = [len(nb) for nb in self._adj.values()]
        return (min(degrees), max(degrees))

    # -- mixing weights ------------------------------------------------------------------------------------

    @cached_property
    def _rows(self) -> dict[int, dict[int, float]]:
        """Sparse W: for each node its self weight and its edge weights."""
        rows: dict[int, dict[int, float]] = {i: {} for i in self.ids}
        if self.weights == "explicit":
            for a, b, w in self.explicit:
                rows[a][b] = rows[b][a] = w
            return rows
        uniform = 1.0 / (1 + self.degree_range()[1])
        for a, b in self.edges:
            w = mh_weight(len(self._adj[a]), len(self._adj[b])) if self.weights != "uniform" else uniform
            rows[a][b] = rows[b][a] = w
        for i, row in rows.items():
            row[i] = 1.0 - math.fsum(row.values())  # fsum: keep the row sum at 1 to the last bit we can
        return rows

    def weight(self, a: int, b: int) -> float:
        """W_ab: the edge weight, the self weight when a == b, and 0.0 for two nodes that are not adjacent."""
        self.index_of(b)
        return self._rows[self.ids[self.index_of(a)]].get(b, 0.0)

    @cached_property
    def _matrix(self) -> np.ndarray:
        w = np.zeros((self.n, self.n), dtype=np.float64)
        for a, row in self._rows.items():
            for b, v in row.items():
                w[self._index[a], self._index[b]] = v
        return w

    def mixing_matrix(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Dense W, shape (n, n), rows and columns in ``self.nodes`` order; a fresh tensor on every call."""
        return torch.tensor(self._matrix, dtype=dtype)

    # -- metrics -------------------------------------------------------------------------------------------

    @cached_property
    def _diameter(self) -> int:
        longest = 0
        for start in self.ids:  # BFS from every node: O(n (n + m)), fine for the graphs people train on
            seen, frontier, level = {start}, [start], 0
            while frontier:
                nxt = [b for a in frontier for b in self._adj[a] if b not in seen]
                seen.update(nxt)
                frontier = list(dict.fromkeys(nxt))
                level += 1
            longest = max(longest, level - 1)
        return longest

    def diameter(self) -> int:
        """Longest shortest path, in hops; 0 for a single node."""
        return self._diameter

    @cached_property
    def _gap(self) -> float:
        if self.n == 1:
            return 1.0
        moduli = np.sort(np.abs(np.linalg.eigvalsh(self._matrix)))[::-1]
        return float(min(1.0, max(0.0, 1.0 - moduli[1])))  # clamp rounding noise just outside [0, 1]

    def spectral_gap(self) -> float:
        """1 − |λ₂| of W (λ₂ the second largest eigenvalue in modulus); 1.0 for a single node.

        Consensus error shrinks roughly by a factor |λ₂| per gossip round, so a larger gap mixes faster;
        0 means gossip never reaches consensus (e.g. a bipartite graph with zero self weights).
        """
        return self._gap

    # -- identity and serialisation ------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """SHA-256 of what determines W (ids, edges, rule, explicit weights), not endpoints, keys or name.

        Nodes compare fingerprints so a topology that differs between machines is caught, not trained on.
        """
        canon = {
            "format": "peernet-topology/1",
            "ids": list(self.ids),
            "edges": [list(e) for e in self.edges],
            "weights": self.weights,
            "explicit": [[a, b, float(w).hex()] for a, b, w in self.explicit],  # hex: exact on every platform
        }
        return hashlib.sha256(json.dumps(canon, separators=(",", ":"), sort_keys=True).encode()).hexdigest()

    def to_toml(self) -> str:
        """The TOML file form; ``parse_topology(tomllib.loads(t.to_toml())) == t``."""
        lines = [
            "# peernet topology (format: docs/topology.md)",
            f"name = {_toml_str(self.name)}",
            f"weights = {_toml_str(self.weights)}",
        ]
        lines += _toml_array("edges", [f"[{a}, {b}]" for a, b in self.edges], per_line=8)
        if self.weights == "explicit":
            lines += _toml_array("explicit_weights", [f"[{a}, {b}, {w!r}]" for a, b, w in self.explicit], 4)
        for spec in self.nodes:
            lines += ["", "[[nodes]]", f"id = {spec.id}"]
            if spec.endpoint is not None:
                lines.append(f"endpoint = {_toml_str(spec.endpoint)}")
            if spec.public_key is not None:
                lines.append(f"public_key = {_toml_str(spec.public_key)}")
        return "\n".join(lines) + "\n"

    def with_keys(self, keys: Mapping[int, str]) -> Topology:
        """A copy whose nodes carry the given CURVE public keys (nodes not in ``keys`` keep theirs)."""
        for node_id in keys:
            self.index_of(node_id)
        nodes = tuple(dataclasses.replace(s, public_key=keys.get(s.id, s.public_key)) for s in self.nodes)
        return dataclasses.replace(self, nodes=nodes)


# -- validation helpers ------------------------------------------------------------------------------------


def _canonical_edges(raw: object, ids: set[int]) -> tuple[tuple[int, int], ...]:
    if not isinstance(raw, list | tuple):
        raise TopologyError(f"edges must be a list of [a, b] pairs, got {raw!r}", key="edges")
    seen: dict[tuple[int, int], object] = {}
    for entry in raw:
        if not (isinstance(entry, list | tuple) and len(entry) == 2 and all(map(_is_int, entry))):
            raise TopologyError(
                f"each edge must be a pair of node ids like [0, 1], got {_show(entry)}", key="edges"
            )
        a, b = entry
        for end in (a, b):
            if end not in ids:
                raise TopologyError(f"edge {_show(entry)} names unknown node {end}", key="edges")
        if a == b:
            raise TopologyError(f"edge {_show(entry)} is a self-loop", key="edges")
        pair = (min(a, b), max(a, b))
        if pair in seen:
            raise TopologyError(f"edge {_show(entry)} duplicates edge {_show(seen[pair])}", key="edges")
        seen[pair] = entry
    return tuple(sorted(seen))


def _check_connected(ids: tuple[int, ...], edges: tuple[tuple[int, int], ...]) -> None:
    parent = {i: i for i in ids}  # union-find: components in near-linear time

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in edges:
        parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for i in ids:
        groups.setdefault(root(i), []).append(i)
    if len(groups) > 1:
        comps = sorted(groups.values())
        shown = "; ".join(_ids(c) for c in comps[:4]) + ("; ..." if len(comps) > 4 else "")
        raise TopologyError(
            f"graph is disconnected: node {comps[1][0]} cannot be reached from node {comps[0][0]} "
            f"({len(comps)} components: {shown})",
            key="edges",
        )


def _canonical_explicit(
    raw: object, ids: tuple[int, ...], edges: tuple[tuple[int, int], ...]
) -> tuple[tuple[int, int, float], ...]:
    key = "explicit_weights"
    if not isinstance(raw, list | tuple):
        raise TopologyError(f"must be a list of [a, b, weight] triples, got {raw!r}", key=key)
    known, edge_set = set(ids), set(edges)
    given: dict[tuple[int, int], float] = {}
    self_w: dict[int, float] = {}
    listed: set[tuple[int, int]] = set()
    for entry in raw:
        if not (
            isinstance(entry, list | tuple)
            and len(entry) == 3
            and _is_int(entry[0])
            and _is_int(entry[1])
            and _is_num(entry[2])
            and math.isfinite(entry[2])
        ):
            raise TopologyError(
                f"each entry must be [a, b, weight] with a finite weight, got {_show(entry)}", key=key
            )
        a, b, w = entry[0], entry[1], float(entry[2])
        for end in (a, b):
            if end not in known:
                raise TopologyError(f"explicit weight {_show(entry)} names unknown node {end}", key=key)
        if w < 0:
            raise TopologyError(f"explicit weight {_show(entry)} is negative", key=key)
        if (a, b) in listed:
            raise TopologyError(f"explicit weight for [{a}, {b}] is given twice", key=key)
        listed.add((a, b))
        if a == b:
            self_w[a] = w
            continue
        pair = (min(a, b), max(a, b))
        if pair not in edge_set:
            raise TopologyError(
                f"explicit weight {_show(entry)} is for [{a}, {b}], which is not an edge", key=key
            )
        if pair in given and abs(given[pair] - w) > _SYMMETRY_TOL:
            raise TopologyError(
                f"explicit weights are not symmetric: W[{b}][{a}] = {given[pair]!r} but W[{a}][{b}] = {w!r}",
                key=key,
            )
        given.setdefault(pair, w)
    off: dict[int, list[float]] = {i: [] for i in ids}
    for a, b in edges:
        if (a, b) not in given:
            raise TopologyError(f"edge [{a}, {b}] has no explicit weight (every edge needs one)", key=key)
        off[a].append(given[(a, b)])
        off[b].append(given[(a, b)])
    for i in ids:
        edge_sum = math.fsum(off[i])
        if i in self_w:
            total = edge_sum + self_w[i]
            if abs(total - 1.0) > STOCHASTIC_TOL:
                raise TopologyError(
                    f"W is not doubly stochastic: row of node {i} sums to {total!r} "
                    f"(self weight {self_w[i]!r} + edge weights {edge_sum!r}); "
                    f"it must be 1 within {STOCHASTIC_TOL}",
                    key=key,
                )
        elif edge_sum > 1.0 + STOCHASTIC_TOL:
            raise TopologyError(
                f"W is not doubly stochastic: edge weights of node {i} sum to {edge_sum!r} > 1, "
                "so its self weight would be negative",
                key=key,
            )
        else:
            self_w[i] = max(0.0, 1.0 - edge_sum)  # max: rounding may leave -1e-16 where 0 is meant
    return tuple(sorted([(a, b, w) for (a, b), w in given.items()] + [(i, i, w) for i, w in self_w.items()]))


# -- TOML ----------------------------------------------------------------------------------------------------


def _toml_str(s: str) -> str:
    """A TOML basic string; escapes what TOML forbids raw (quote, backslash, control characters)."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif (ch < " " and ch != "\t") or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_array(key: str, items: list[str], per_line: int) -> list[str]:
    if not items:
        return [f"{key} = []"]
    rows = [items[i : i + per_line] for i in range(0, len(items), per_line)]
    return [f"{key} = ["] + ["    " + ", ".join(row) + "," for row in rows] + ["]"]


def _reject_unknown(
    table: Mapping[str, Any], allowed: tuple[str, ...], where: str, source: str, prefix: str = ""
) -> None:
    for k in table:
        if k not in allowed:
            close = difflib.get_close_matches(k, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TopologyError(
                f"unknown {where}key {k!r}; {hint}allowed keys: {', '.join(allowed)}",
                file=source,
                key=prefix + k,
            )


def parse_topology(data: Mapping[str, Any], source: str = "<topology>") -> Topology:
    """Build and validate a Topology from parsed TOML; errors name ``source``, the key and the problem."""
    if not isinstance(data, Mapping):
        raise TopologyError(f"a topology must be a table, got {type(data).__name__}", file=source)
    _reject_unknown(data, _TOP_KEYS, "top-level ", source)
    raw_nodes = data.get("nodes")
    if not raw_nodes:
        raise TopologyError("no nodes: add at least one [[nodes]] table with an id", file=source, key="nodes")
    if not isinstance(raw_nodes, list):
        raise TopologyError(f"nodes must be [[nodes]] tables, got {raw_nodes!r}", file=source, key="nodes")
    nodes = []
    for i, raw in enumerate(raw_nodes):
        if not isinstance(raw, Mapping):
            raise TopologyError(
                f"must be a table like {{ id = 0 }}, got {raw!r}", file=source, key=f"nodes[{i}]"
            )
        _reject_unknown(raw, _NODE_KEYS, "per-node ", source, prefix=f"nodes[{i}].")
        if "id" not in raw:
            raise TopologyError("missing required key 'id'", file=source, key=f"nodes[{i}]")
        try:
            nodes.append(NodeSpec(raw["id"], raw.get("endpoint"), raw.get("public_key")))
        except TopologyError as exc:
            raise TopologyError(exc.reason, file=source, key=f"nodes[{i}].{exc.key}") from None
    try:
        return Topology(
            nodes=tuple(nodes),
            edges=data.get("edges", ()),
            weights=data.get("weights", "metropolis-hastings"),
            explicit=data.get("explicit_weights", ()),
            name=data.get("name", ""),
        )
    except TopologyError as exc:
        raise TopologyError(exc.reason, file=source, key=exc.key) from None


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology TOML file."""
    source = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise TopologyError("file not found", file=source) from None
    except OSError as exc:
        raise TopologyError(f"cannot read file: {exc.strerror or exc}", file=source) from None
    except UnicodeDecodeError:
        raise TopologyError("invalid TOML: the file is not UTF-8 text", file=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"invalid TOML: {exc}", file=source) from None
    return parse_topology(data, source)


def save_topology(topo: Topology, path: str | Path) -> None:
    """Write ``topo.to_toml()`` atomically: a reader sees the old file or the new one, never half of it."""
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise TopologyError(f"cannot write file: {exc.strerror or exc}", file=str(path)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(topo.to_toml())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise TopologyError(f"cannot write file: {exc.strerror or exc}", file=str(path)) from None


def generate(kind: str, n: int, *, seed: int = 0, weights: str = "metropolis-hastings") -> Topology:
    """A generated topology on nodes 0..n-1, named e.g. ``ring-8`` (``random-8-seed3`` for random graphs)."""
    if weights not in ("metropolis-hastings", "uniform"):
        raise TopologyError(
            f"generated topologies use 'metropolis-hastings' or 'uniform' weights, got {weights!r} "
            "(write explicit weights into a topology file instead)",
            key="weights",
        )
    edges = tuple(generator_edges(kind, n, seed))
    name = f"random-{n}-seed{seed}" if kind == "random" else f"{kind}-{n}"
    return Topology(nodes=tuple(NodeSpec(i) for i in range(n)), edges=edges, weights=weights, name=name)
