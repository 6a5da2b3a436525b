"""Edge lists of the standard graphs: ring, 2-D torus, hypercube, exponential, complete, star, random."""

from __future__ import annotations

import math
from collections.abc import Callable

from peernet.errors import TopologyError

Edge = tuple[int, int]

GENERATORS: tuple[str, ...] = ("ring", "torus", "hypercube", "exponential", "complete", "star", "random")

_MASK64 = (1 << 64) - 1


def _pair(a: int, b: int) -> Edge:
    return (a, b) if a < b else (b, a)


class SplitMix64:
    """A tiny PRNG with a fixed, published algorithm.

    Nodes often derive a random topology from its seed independently; stdlib ``random`` and numpy make no
    promise that a seed gives the same stream across releases, and a graph that differs silently between
    machines breaks the mixing matrix. SplitMix64 is a few lines of integer arithmetic, identical everywhere.
    """

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK64

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        """A float in [0, 1) with 53 random bits."""
        return (self.next_u64() >> 11) * 2.0**-53

    def below(self, k: int) -> int:
        """An integer in [0, k), unbiased (rejection sampling rather than a plain modulo)."""
        limit = (1 << 64) - (1 << 64) % k
        while True:
            r = self.next_u64()
            if r < limit:
                return r % k


def ring_edges(n: int, seed: int = 0) -> list[Edge]:
    """Cycle 0-1-...-(n-1)-0; n = 2 is a single edge and n = 1 has none."""
    return sorted({_pair(i, (i + 1) % n) for i in range(n) if n > 1})


def _is_torus_size(n: int) -> bool:
    return any(n % r == 0 for r in range(3, math.isqrt(n) + 1))


def torus_shape(n: int) -> tuple[int, int]:
    """The most square rows × cols = n with rows, cols ≥ 3 (rows ≤ cols); (1, 1) for a single node."""
    if n == 1:
        return (1, 1)
    for rows in range(math.isqrt(n), 2, -1):
        if n % rows == 0:
            return (rows, n // rows)
    # Sizes like 2p would give a 2-row "torus" whose wrap-around edges duplicate the direct ones: it is a
    # different graph (degree 3), so refuse instead of quietly building something else.
    below = next((m for m in range(n - 1, 8, -1) if _is_torus_size(m)), None)
    above = next(m for m in range(max(n + 1, 9), 2 * n + 10) if _is_torus_size(m))
    near = f"{below} or {above}" if below is not None else str(above)
    raise TopologyError(
        f"torus: {n} nodes cannot be arranged as rows × cols with rows, cols ≥ 3 "
        f"(nearest sizes that can: {near})"
    )


def torus_edges(n: int, seed: int = 0) -> list[Edge]:
    """2-D torus on the most square grid: each node joined to its right and lower neighbour, wrapping."""
    rows, cols = torus_shape(n)
    if n == 1:
        return []
    edges: set[Edge] = set()
    for r in range(rows):
        for c in range(cols):
            here = r * cols + c
            edges.add(_pair(here, r * cols + (c + 1) % cols))
            edges.add(_pair(here, ((r + 1) % rows) * cols + c))
    return sorted(edges)


def hypercube_edges(n: int, seed: int = 0) -> list[Edge]:
    """Nodes are bit strings; an edge joins ids that differ in exactly one bit. n must be a power of 2."""
    if n & (n - 1):
        lower = 1 << (n.bit_length() - 1)
        raise TopologyError(
            f"hypercube: needs a power-of-two number of nodes, got {n} (try {lower} or {2 * lower})"
        )
    bits = n.bit_length() - 1
    return sorted((i, i ^ (1 << k)) for i in range(n) for k in range(bits) if i < i ^ (1 << k))


def exponential_edges(n: int, seed: int = 0) -> list[Edge]:
    """Undirected exponential graph: i joined to i ± 2^k (mod n) for every 2^k < n, duplicates merged."""
    edges: set[Edge] = set()
    step = 1
    while step < n:
        edges.update(_pair(i, (i + step) % n) for i in range(n))
        step *= 2
    return sorted(edges)


def complete_edges(n: int, seed: int = 0) -> list[Edge]:
    """Every pair of nodes."""
    return [(a, b) for a in range(n) for b in range(a + 1, n)]


def star_edges(n: int, seed: int = 0) -> list[Edge]:
    """Node 0 is the hub, joined to every other node."""
    return [(0, i) for i in range(1, n)]


def random_edges(n: int, seed: int = 0) -> list[Edge]:
    """Seeded connected random graph: a random spanning tree plus each other pair with p = min(1, 2 ln n / n).

    The tree guarantees connectivity, which plain Erdős–Rényi does not; p = 2 ln n / n is twice the
    connectivity threshold, so the extra edges give an average degree of about 2 ln n.
    """
    if n < 2:
        return []
    rng = SplitMix64(seed)
    order = list(range(n))
    for i in range(n - 1, 0, -1):  # Fisher–Yates shuffle
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    # Random recursive tree: each node in shuffled order hangs off a uniformly chosen earlier one.
    edges = {_pair(order[i], order[rng.below(i)]) for i in range(1, n)}
    p = min(1.0, 2.0 * math.log(n) / n)
    extra = [(a, b) for a in range(n) for b in range(a + 1, n) if (a, b) not in edges and rng.uniform() < p]
    return sorted(edges.union(extra))


_BUILDERS: dict[str, Callable[[int, int], list[Edge]]] = {
    "ring": ring_edges,
    "torus": torus_edges,
    "hypercube": hypercube_edges,
    "exponential": exponential_edges,
    "complete": complete_edges,
    "star": star_edges,
    "random": random_edges,
}


def generator_edges(kind: str, n: int, seed: int = 0) -> list[Edge]:
    """Sorted (a < b) edge list of graph ``kind`` on nodes 0..n-1; TopologyError if kind or n is invalid."""
    if kind not in _BUILDERS:
        raise TopologyError(f"unknown topology kind {kind!r}; choose one of: {', '.join(GENERATORS)}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise TopologyError(f"{kind}: number of nodes must be an integer ≥ 1, got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TopologyError(f"{kind}: seed must be an integer, got {seed!r}")
    return _BUILDERS[kind](n, seed)
