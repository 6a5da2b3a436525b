"""The topology code as it was before it scaled (scalar generators, dict-of-dicts W, JSON fingerprint, all-pairs
BFS): the reference the fast code must equal, bit for bit where the old code defined the result."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

from peernet.core.topology import Topology
from peernet.core.topology_gen import SplitMix64

Edge = tuple[int, int]


def _pair(a: int, b: int) -> Edge:
    return (a, b) if a < b else (b, a)


def random_edges(n: int, seed: int = 0) -> list[Edge]:
    if n < 2:
        return []
    rng = SplitMix64(seed)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    edges = {_pair(order[i], order[rng.below(i)]) for i in range(1, n)}
    p = min(1.0, 2.0 * math.log(n) / n)
    extra = [(a, b) for a in range(n) for b in range(a + 1, n) if (a, b) not in edges and rng.uniform() < p]
    return sorted(edges.union(extra))


def torus_edges(n: int, rows: int, cols: int) -> list[Edge]:
    if n == 1:
        return []
    edges: set[Edge] = set()
    for r in range(rows):
        for c in range(cols):
            here = r * cols + c
            edges.add(_pair(here, r * cols + (c + 1) % cols))
            edges.add(_pair(here, ((r + 1) % rows) * cols + c))
    return sorted(edges)


def edges_of(kind: str, n: int, shape: tuple[int, int] = (1, 1)) -> list[Edge]:
    """The deterministic generators' edge lists, written the old way."""
    if kind == "ring":
        return sorted({_pair(i, (i + 1) % n) for i in range(n) if n > 1})
    if kind == "torus":
        return torus_edges(n, *shape)
    if kind == "hypercube":
        bits = n.bit_length() - 1
        return sorted((i, i ^ (1 << k)) for i in range(n) for k in range(bits) if i < i ^ (1 << k))
    if kind == "exponential":
        edges: set[Edge] = set()
        step = 1
        while step < n:
            edges.update(_pair(i, (i + step) % n) for i in range(n))
            step *= 2
        return sorted(edges)
    if kind == "complete":
        return [(a, b) for a in range(n) for b in range(a + 1, n)]
    return [(0, i) for i in range(1, n)]


def rows(topo: Topology) -> dict[int, dict[int, float]]:
    """The old sparse W: for each node its self weight and its edge weights."""
    adj: dict[int, list[int]] = {i: [] for i in topo.ids}
    for a, b in topo.edges:
        adj[a].append(b)
        adj[b].append(a)
    out: dict[int, dict[int, float]] = {i: {} for i in topo.ids}
    if topo.weights == "explicit":
        for a, b, w in topo.explicit:
            out[a][b] = out[b][a] = w
        return out
    uniform = 1.0 / (1 + max(len(nb) for nb in adj.values()))
    for a, b in topo.edges:
        w = 1.0 / (1 + max(len(adj[a]), len(adj[b]))) if topo.weights != "uniform" else uniform
        out[a][b] = out[b][a] = w
    for i, row in out.items():
        row[i] = 1.0 - math.fsum(row.values())
    return out


def dense(topo: Topology) -> np.ndarray:
    index = {node: i for i, node in enumerate(topo.ids)}
    w = np.zeros((topo.n, topo.n))
    for a, row in rows(topo).items():
        for b, v in row.items():
            w[index[a], index[b]] = v
    return w


def fingerprint(topo: Topology) -> str:
    canon = {
        "format": "peernet-topology/1",
        "ids": list(topo.ids),
        "edges": [list(e) for e in topo.edges],
        "weights": topo.weights,
        "explicit": [[a, b, float(w).hex()] for a, b, w in topo.explicit],
    }
    return hashlib.sha256(json.dumps(canon, separators=(",", ":"), sort_keys=True).encode()).hexdigest()


def diameter(topo: Topology) -> int:
    """BFS from every node, in Python."""
    adj: dict[int, list[int]] = {i: [] for i in topo.ids}
    for a, b in topo.edges:
        adj[a].append(b)
        adj[b].append(a)
    longest = 0
    for start in topo.ids:
        seen, frontier, level = {start}, [start], 0
        while frontier:
            nxt = [b for a in frontier for b in adj[a] if b not in seen]
            seen.update(nxt)
            frontier = list(dict.fromkeys(nxt))
            level += 1
        longest = max(longest, level - 1)
    return longest


def gap(topo: Topology) -> float:
    if topo.n == 1:
        return 1.0
    moduli = np.sort(np.abs(np.linalg.eigvalsh(dense(topo))))[::-1]
    return float(min(1.0, max(0.0, 1.0 - moduli[1])))
