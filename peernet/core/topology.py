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

W is held sparse (numpy CSR), so every method works on 100,000 nodes and more; only ``mixing_matrix()`` is dense
and refuses above DENSE_MAX_BYTES. The validation helpers live in ``topology_check``, the generators in
``topology_gen``, the spectral gap and diameter in ``topology_metrics`` (with ``topology_symmetry``); reading and
writing topology files (TOML, key files) is I/O and lives outside core, in ``peernet.topology_files``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, cast

import numpy as np

from peernet.core import topology_metrics as metrics
from peernet.core.topology_check import STOCHASTIC_TOL as STOCHASTIC_TOL
from peernet.core.topology_check import _canonical_explicit, _check_connected, _ids, _is_int, canonical_edge_arrays
from peernet.core.topology_gen import GENERATORS, generator_array
from peernet.core.topology_limits import MAX_NODE_ID, check_spectral_gap, endpoint_problem, public_key_problem
from peernet.core.topology_metrics import Diameter
from peernet.core.topology_symmetry import Symmetry, find_symmetry, weighted
from peernet.errors import TopologyError, quoted

if TYPE_CHECKING:
    import torch
    from scipy.sparse import csr_matrix

__all__ = [
    "GENERATORS",
    "WEIGHT_RULES",
    "NodeSpec",
    "Topology",
    "generate",
    "mh_weight",
]

WEIGHT_RULES: tuple[str, ...] = ("metropolis-hastings", "uniform", "explicit")
FINGERPRINT_FORMAT = "peernet-topology/1"
#: Largest dense W that mixing_matrix() builds (float64): 1 GiB, about 11,585 nodes.
DENSE_MAX_BYTES = 2**30
_JSON_INTS = str.maketrans({"(": "[", ")": "]", " ": None})


def _ints_json(values: list[int] | list[tuple[int, int]]) -> str:
    """json.dumps(values, separators=(",", ":")) for a list of ints or of int pairs, by repr: the same bytes."""
    return repr(values).translate(_JSON_INTS)


def _row_fsums(indptr: np.ndarray, values: np.ndarray) -> np.ndarray:
    """math.fsum of each CSR row: the correctly rounded sum the self weights have always been computed from. A
    row of d equal weights is d·w rounded once, the same number, in numpy; only mixed rows go through fsum."""
    sums = np.zeros(len(indptr) - 1)
    degree = np.diff(indptr)
    rows = np.flatnonzero(degree > 0)
    if not len(rows):
        return sums
    high = np.maximum.reduceat(values, indptr[rows])  # empty rows hold no entries, so skipping them is safe
    same = high == np.minimum.reduceat(values, indptr[rows])
    sums[rows[same]] = degree[rows[same]] * high[same]
    mixed = rows[~same].tolist()
    if mixed:
        flat, ptr = values.tolist(), indptr.tolist()
        sums[mixed] = [math.fsum(flat[ptr[i] : ptr[i + 1]]) for i in mixed]
    return sums


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
            raise TopologyError(f"node id must be a non-negative integer, got {quoted(self.id)}", key="id")
        if self.id > MAX_NODE_ID:
            raise TopologyError(f"node id {quoted(self.id)} is too large: the wire carries ids up to {MAX_NODE_ID}",
                                key="id")
        if self.endpoint is not None:
            ep = self.endpoint
            problem = endpoint_problem(ep) if isinstance(ep, str) else "it is not a string"
            if problem is not None:
                raise TopologyError(f"endpoint must be a string like 'tcp://10.0.0.3:5555' or 'ipc:///run/node3', "
                                    f"got {quoted(ep)}: {problem}", key="endpoint")
        key = self.public_key
        if key is not None:
            wrong_type = f"must be 40 z85 characters, got {quoted(key)}"
            problem = public_key_problem(key) if isinstance(key, str) else wrong_type
            if problem is not None:
                raise TopologyError(f"public_key {problem}", key="public_key")


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
            raise TopologyError(f"name must be a string, got {quoted(self.name)}", key="name")
        if not isinstance(self.weights, str) or self.weights not in WEIGHT_RULES:
            allowed = ", ".join(map(repr, WEIGHT_RULES))
            raise TopologyError(f"weights must be one of {allowed}, got {quoted(self.weights)}", key="weights")
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
        edges, lo, hi = canonical_edge_arrays(self.edges, self.ids)
        object.__setattr__(self, "edges", edges)
        self.__dict__["_ends"] = (lo, hi)  # seeds the cached property: validation already computed them
        _check_connected(self.ids, lo, hi)
        if self.weights == "explicit":
            object.__setattr__(self, "explicit", _canonical_explicit(self.explicit, self.ids, self.edges))
            check_spectral_gap(self.ids, self.explicit, zero=STOCHASTIC_TOL)  # the other rules always have one
        elif not self.explicit:
            object.__setattr__(self, "explicit", ())  # so an empty list compares and hashes like ()
        else:
            raise TopologyError(
                f'explicit weights are given but weights = {quoted(self.weights)}; set weights = "explicit" '
                "to use them or remove them",
                key="explicit_weights",
            )

    # -- structure ---------------------------------------------------------------------------------------

    @property
    def n(self) -> int:
        return len(self.nodes)

    @cached_property
    def ids(self) -> tuple[int, ...]:
        return tuple(s.id for s in self.nodes)

    @cached_property
    def _index(self) -> dict[int, int]:
        return {s.id: i for i, s in enumerate(self.nodes)}

    @cached_property
    def _ends(self) -> tuple[np.ndarray, np.ndarray]:
        """Per edge, the node indices of its smaller and larger end (set while validating)."""
        return canonical_edge_arrays(self.edges, self.ids)[1:]

    @cached_property
    def _csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Adjacency in CSR form over node indices: node i's neighbours are ``indices[indptr[i]:indptr[i + 1]]``,
        ascending, and ``edge[k]`` is the edge (position in ``self.edges``) behind entry k."""
        lo, hi = self._ends
        # Entries to smaller neighbours first (edges sorted by (lo, hi) list them in order for each hi), then to
        # larger ones: a stable sort by row then leaves every row's columns ascending.
        rows, cols = np.concatenate([hi, lo]), np.concatenate([lo, hi])
        order = np.argsort(rows, kind="stable")
        indptr = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=self.n), out=indptr[1:])
        edge = np.concatenate([np.arange(len(lo)), np.arange(len(lo))])[order]
        return indptr, cols[order], edge

    @cached_property
    def _degrees(self) -> np.ndarray:
        return np.diff(self._csr[0])

    @cached_property
    def _plain_ids(self) -> bool:
        """Whether the ids are 0..n-1, so an index is its own id."""
        return self.ids[0] == 0 and self.ids[-1] == self.n - 1

    def index_of(self, node_id: int) -> int:
        """Position of ``node_id`` in ``self.nodes`` (also its row and column in the mixing matrix)."""
        try:
            return self._index[node_id]
        except (KeyError, TypeError):
            where = f" {quoted(self.name)}" if self.name else ""
            raise TopologyError(
                f"node {quoted(node_id)} is not in topology{where} (ids: {_ids(self.ids)})"
            ) from None

    def neighbours(self, node_id: int) -> tuple[int, ...]:
        """The neighbours' ids, ascending."""
        i = self.index_of(node_id)
        indptr, indices, _ = self._csr
        near = indices[indptr[i] : indptr[i + 1]].tolist()
        return tuple(near) if self._plain_ids else tuple(self.ids[k] for k in near)

    def degree(self, node_id: int) -> int:
        return int(self._degrees[self.index_of(node_id)])

    def degree_range(self) -> tuple[int, int]:
        return (int(self._degrees.min()), int(self._degrees.max()))

    # -- mixing weights ------------------------------------------------------------------------------------

    @cached_property
    def _explicit_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(edge weights in ``self.edges`` order, self weights in node order) from the canonical triples, which
        are sorted by (a, b): the edge triples come in the edges' order and the self triples in the nodes'."""
        ends = np.array([(a, b) for a, b, _ in self.explicit], dtype=np.int64).reshape(-1, 2)
        w = np.array([w for _, _, w in self.explicit], dtype=np.float64)
        own = ends[:, 0] == ends[:, 1]
        return w[~own], w[own]

    @cached_property
    def _edge_weights(self) -> np.ndarray:
        """W on each edge, in ``self.edges`` order."""
        if self.weights == "explicit":
            return self._explicit_arrays[0]
        if self.weights == "uniform":
            return np.full(len(self.edges), 1.0 / (1 + self.degree_range()[1]))
        lo, hi = self._ends
        return np.asarray(1.0 / (1 + np.maximum(self._degrees[lo], self._degrees[hi])))  # mh_weight's very bits

    @cached_property
    def _self_weights(self) -> np.ndarray:
        """W_ii in node order: given (explicit), or 1 − the correctly rounded sum of the row's edge weights."""
        if self.weights == "explicit":
            return self._explicit_arrays[1]
        indptr, _, edge = self._csr
        return np.asarray(1.0 - _row_fsums(indptr, self._edge_weights[edge]))

    def weight(self, a: int, b: int) -> float:
        """W_ab: the edge weight, the self weight when a == b, and 0.0 for two nodes that are not adjacent."""
        j = self.index_of(b)
        i = self.index_of(a)
        if i == j:
            return float(self._self_weights[i])
        indptr, indices, edge = self._csr
        row = indices[indptr[i] : indptr[i + 1]]
        k = int(np.searchsorted(row, j))
        return float(self._edge_weights[edge[indptr[i] + k]]) if k < len(row) and row[k] == j else 0.0

    @cached_property
    def _offdiag(self) -> csr_matrix:
        """W without its diagonal as a scipy CSR matrix (the adjacency's structure, edge weights as data)."""
        from scipy.sparse import csr_matrix

        indptr, indices, edge = self._csr
        return csr_matrix((self._edge_weights[edge], indices, indptr), shape=(self.n, self.n))

    def mixing_csr(self) -> csr_matrix:
        """Sparse W as a scipy CSR matrix (float64), rows and columns in ``self.nodes`` order: O(n + m) memory."""
        from scipy.sparse import diags

        return (self._offdiag + diags(self._self_weights)).tocsr()

    @cached_property
    def _matrix(self) -> np.ndarray:
        need = self.n * self.n * 8
        if need > DENSE_MAX_BYTES:
            raise TopologyError(
                f"a dense mixing matrix of {self.n:,} nodes takes {need / 2**30:.1f} GiB (n² float64 entries), over "
                f"the {DENSE_MAX_BYTES / 2**30:.0f} GiB limit; use mixing_csr(), weight() or neighbours() instead")
        indptr, indices, edge = self._csr
        w = np.zeros((self.n, self.n), dtype=np.float64)
        w[np.repeat(np.arange(self.n), np.diff(indptr)), indices] = self._edge_weights[edge]
        w[np.arange(self.n), np.arange(self.n)] = self._self_weights
        return w

    def mixing_matrix(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Dense W, shape (n, n), rows and columns in ``self.nodes`` order (float64 unless ``dtype``); a fresh
        tensor on every call. TopologyError when it would take over DENSE_MAX_BYTES (about 11,585 nodes)."""
        # torch is imported here, not at module level, so that the bootstrap and the light CLI commands, which
        # read topologies but never mix, start without paying torch's ~3 s import.
        import torch

        return torch.tensor(self._matrix, dtype=torch.float64 if dtype is None else dtype)

    # -- metrics -------------------------------------------------------------------------------------------

    @cached_property
    def _symmetry(self) -> Symmetry:
        return find_symmetry(self.n, *self._ends)

    def _weighted_symmetry(self) -> Symmetry:
        """The translation symmetries of W itself: those of the graph keep Metropolis–Hastings and uniform
        weights (they depend on degrees only, which an automorphism keeps); explicit weights are checked."""
        if self.weights != "explicit":
            return self._symmetry
        return weighted(self._symmetry, *self._ends, self._edge_weights, self._self_weights)

    def _first_row(self) -> np.ndarray:
        indptr, indices, edge = self._csr
        row = np.zeros(self.n)
        row[indices[: indptr[1]]] = self._edge_weights[edge[: indptr[1]]]
        row[0] = self._self_weights[0]
        return row

    def diameter_bounds(self, max_bfs: int | None = None) -> Diameter:
        """The diameter, or labelled bounds on it when the search ran out of budget (see ``Diameter``).

        One BFS per orbit of the translation symmetries found, pruned by eccentricity bounds; exact up to
        metrics.EXACT_DIAMETER_MAX nodes, above after a fixed amount of BFS work, or ``max_bfs`` BFS runs.
        """
        if max_bfs is None:
            return self._diameter
        indptr, indices, _ = self._csr
        return metrics.diameter(indptr, indices, self._symmetry.orbits(), max_bfs)

    @cached_property
    def _diameter(self) -> Diameter:
        indptr, indices, _ = self._csr
        return metrics.diameter(indptr, indices, self._symmetry.orbits())

    def diameter(self) -> int:
        """Longest shortest path, in hops; 0 for a single node. TopologyError when only bounds are known (a
        large graph without symmetry whose search ran out of budget): ``diameter_bounds()`` gives them."""
        found = self._diameter
        if found.value is None:
            raise TopologyError(f"diameter: only bounds are known, {found}; use diameter_bounds()")
        return found.value

    @cached_property
    def _gap(self) -> float:
        return self._spectral_gap("auto")

    def _spectral_gap(self, method: str) -> float:
        return metrics.spectral_gap(method, self.n, dense=lambda: self._matrix,
                                    sparse=lambda: (self._offdiag, self._self_weights),
                                    row0=self._first_row, sym=self._weighted_symmetry)

    def spectral_gap(self, method: str = "auto") -> float:
        """1 − |λ₂| of W (λ₂ the second largest eigenvalue in modulus); 1.0 for a single node.

        Consensus error shrinks roughly by a factor |λ₂| per gossip round, so a larger gap mixes faster;
        0 means gossip never reaches consensus (e.g. a bipartite graph with zero self weights). ``method``:
        'auto' (dense eigvalsh up to metrics.DENSE_GAP_MAX nodes, else 'sparse'), 'dense', 'sparse' (exact
        by a translation symmetry when W has one, else ARPACK) or 'arpack' (ARPACK even then).
        TopologyError if ARPACK does not converge.
        """
        return self._gap if method == "auto" else self._spectral_gap(method)

    # -- identity and serialisation ------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """SHA-256 of what determines W (ids, edges, rule, explicit weights), not endpoints, keys or name.

        Nodes compare fingerprints so a topology that differs between machines is caught, not trained on.
        """
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:
        explicit = [[a, b, float(w).hex()] for a, b, w in self.explicit]  # hex: exact on every platform
        if set(map(type, self.ids)) != {int}:  # int subclasses print differently: let json write them
            canon = {"format": FINGERPRINT_FORMAT, "ids": list(self.ids), "edges": [list(e) for e in self.edges],
                     "weights": self.weights, "explicit": explicit}
            return hashlib.sha256(json.dumps(canon, separators=(",", ":"), sort_keys=True).encode()).hexdigest()
        # The same bytes as json.dumps(canon, separators=(",", ":"), sort_keys=True), built by repr, which is
        # several times faster on a million edges: keys in sorted order, int lists without spaces.
        text = (f'{{"edges":{_ints_json(list(self.edges))},"explicit":{json.dumps(explicit, separators=(",", ":"))},'
                f'"format":{json.dumps(FINGERPRINT_FORMAT)},"ids":{_ints_json(list(self.ids))},'
                f'"weights":{json.dumps(self.weights)}}}')
        return hashlib.sha256(text.encode()).hexdigest()

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
    edges = cast("tuple[tuple[int, int], ...]", generator_array(kind, n, seed))  # an array: __post_init__ takes it
    name = f"random-{n}-seed{seed}" if kind == "random" else f"{kind}-{n}"
    return Topology(nodes=tuple(NodeSpec(i) for i in range(n)), edges=edges, weights=weights, name=name)
