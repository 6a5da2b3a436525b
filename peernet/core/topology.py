"""Topologies: nodes, undirected edges, the mixing matrix W, graph metrics and the TOML file format.

A topology file (full reference in docs/topology.md)::

    name = "ring-4"                          # optional free text
    weights = "metropolis-hastings"          # or "uniform" or "explicit" (default metropolis-hastings)
    edges = [[0, 1], [1, 2], [2, 3], [0, 3]]
    explicit_weights = [[0, 1, 0.25], ...]   # weights = "explicit" only: [a, b, W_ab]; [a, a, W_aa] optional

    [[nodes]]
    id = 0
    endpoint = "tcp://127.0.0.1:5550"        # optional static endpoint
    public_key = "<40 z85 characters>"       # optional CURVE public key, or instead:
    # public_key_file = "keys/node0.key"     # a certificate file, relative to this file (read at load time)

Every defect (unknown node, self-loop, duplicate edge or node, disconnected graph, bad explicit weights,
unknown keys, wrong types) raises TopologyError naming the file, the key and the problem.

The validation helpers live in ``topology_check``; reading and writing topology files (TOML, key files)
is I/O and lives outside core, in ``peernet.topology_files``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from peernet.core.topology_check import STOCHASTIC_TOL as STOCHASTIC_TOL
from peernet.core.topology_check import _canonical_edges, _canonical_explicit, _check_connected, _ids, _is_int
from peernet.core.topology_gen import GENERATORS, generator_edges
from peernet.errors import TopologyError

if TYPE_CHECKING:
    import torch

__all__ = [
    "GENERATORS",
    "WEIGHT_RULES",
    "NodeSpec",
    "Topology",
    "generate",
    "mh_weight",
]

WEIGHT_RULES: tuple[str, ...] = ("metropolis-hastings", "uniform", "explicit")
_Z85 = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")
_ENDPOINT = re.compile(r"[a-z][a-z0-9+.-]*://\S+")


def mh_weight(deg_a: int, deg_b: int) -> float:
    """Metropolis–Hastings weight 1 / (1 + max(deg_a, deg_b)) of an edge between nodes of these degrees."""
    if deg_a < 0 or deg_b < 0:
        raise TopologyError(f"degrees must be non-negative, got {deg_a} and {deg_b}")
    return 1.0 / (1 + max(deg_a, deg_b))


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

    def mixing_matrix(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Dense W, shape (n, n), rows and columns in ``self.nodes`` order (float64 unless ``dtype``); a fresh
        tensor on every call."""
        # torch is imported here, not at module level, so that the bootstrap and the light CLI commands, which
        # read topologies but never mix, start without paying torch's ~3 s import.
        import torch

        return torch.tensor(self._matrix, dtype=torch.float64 if dtype is None else dtype)

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


    def with_keys(self, keys: Mapping[int, str]) -> Topology:
        """A copy whose nodes carry the given CURVE public keys (nodes not in ``keys`` keep theirs)."""
        for node_id in keys:
            self.index_of(node_id)
        nodes = tuple(dataclasses.replace(s, public_key=keys.get(s.id, s.public_key)) for s in self.nodes)
        return dataclasses.replace(self, nodes=nodes)

    def without_keys(self) -> Topology:
        """A copy with no CURVE public keys (for a run without CURVE on a keyed topology)."""
        nodes = tuple(dataclasses.replace(s, public_key=None) for s in self.nodes)
        return dataclasses.replace(self, nodes=nodes)


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
