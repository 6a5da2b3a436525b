"""Edge lists of the standard graphs (ring, 2-D torus, hypercube, exponential, complete, star, random), as numpy."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from peernet.errors import TopologyError

Edge = tuple[int, int]

GENERATORS: tuple[str, ...] = ("ring", "torus", "hypercube", "exponential", "complete", "star", "random")

#: Most edges a generated graph may have, 2**23: the complete graph on 4,096 nodes fits (8,386,560 edges), one
#: on 4,097 does not. Above this, holding and checking the graph takes gigabytes (BYTES_PER_EDGE).
MAX_GENERATED_EDGES = 8_388_608
#: Memory a Topology takes per edge once loaded and checked (edge tuples, index arrays, sparse W), measured.
BYTES_PER_EDGE = 200
#: Up to this many nodes the random graph draws one number per pair (the original method, O(n²)); above it,
#: geometric skips over the same stream (O(n + m)). The two give different graphs for one seed.
RANDOM_PAIRWISE_MAX = 8192

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's state increment: output t is mix(seed + t·γ)
_PAIR_CHUNK = 1 << 20  # pairs per vectorised batch of the pairwise random draw (about 60 MB of temporaries)


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


def _canonical(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """(m, 2) int64 edges with a < b, sorted and with duplicates merged, from two endpoint arrays."""
    lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    keys = np.sort(lo * n + hi)  # sort and mask: np.unique is many times slower on millions of int64
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys
    return np.stack([keys // n, keys % n], axis=1)


def _splitmix_at(seed: int, counters: np.ndarray) -> np.ndarray:
    """Outputs number ``counters`` (1-based) of ``SplitMix64(seed)``: its state after t steps is seed + t·γ, so any
    output is computed directly, bit for bit as ``next_u64`` gives it (uint64 arithmetic wraps like the mask)."""
    z = np.uint64(seed & _MASK64) + counters.astype(np.uint64) * np.uint64(_GAMMA)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.asarray(z ^ (z >> np.uint64(31)))


def _uniform_at(seed: int, counters: np.ndarray) -> np.ndarray:
    """``SplitMix64.uniform`` at outputs ``counters``: 53 random bits scaled exactly into [0, 1)."""
    return (_splitmix_at(seed, counters) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _below_many(seed: int, used: int, bounds: np.ndarray) -> tuple[np.ndarray, int]:
    """``rng.below(k)`` for each k of ``bounds`` in turn, from a stream that has given ``used`` outputs; returns the
    values and the outputs used after them. A rejected draw (probability k / 2**64) is skipped as ``below`` does."""
    out = np.empty(len(bounds), dtype=np.int64)
    done = 0
    while done < len(bounds):
        k = bounds[done:].astype(np.uint64)
        r = _splitmix_at(seed, np.arange(used + 1, used + 1 + len(k), dtype=np.uint64))
        rem = (np.uint64(_MASK64) % k + np.uint64(1)) % k  # 2**64 mod k
        bad = np.flatnonzero((rem != 0) & (r >= np.uint64(0) - rem))  # r ≥ 2**64 − rem: below() draws again
        take = len(k) if bad.size == 0 else int(bad[0])
        out[done : done + take] = (r[:take] % k[:take]).astype(np.int64)
        done += take
        used += take + (bad.size > 0)
    return out, used


def _det_log(x: np.ndarray) -> np.ndarray:
    """Natural log from frexp, +, −, × and ÷ only, so every machine gets the same bits (np.log's SIMD code may
    differ in the last bit between CPUs, which could move a geometric skip and change a seeded graph)."""
    m, e = np.frexp(x)  # x = m · 2**e, m in [0.5, 1)
    low = m < math.sqrt(0.5)
    m = np.where(low, m * 2.0, m)  # now in [√½, √2)
    e = e - low
    s = (m - 1.0) / (m + 1.0)  # log m = 2 atanh s = 2 (s + s³/3 + s⁵/5 + ...), |s| ≤ 0.172: 12 terms reach 1e-17
    s2 = s * s
    acc = np.full_like(s, 1.0 / 23.0)
    for k in range(21, 0, -2):
        acc = acc * s2 + 1.0 / k
    return np.asarray(e * math.log(2.0) + 2.0 * s * acc)


def ring_edges(n: int, seed: int = 0) -> np.ndarray:
    """Cycle 0-1-...-(n-1)-0; n = 2 is a single edge and n = 1 has none."""
    i = np.arange(n if n > 1 else 0)
    return _canonical(i, (i + 1) % max(n, 1), n)


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


def torus_edges(n: int, seed: int = 0) -> np.ndarray:
    """2-D torus on the most square grid: each node joined to its right and lower neighbour, wrapping."""
    rows, cols = torus_shape(n)
    if n == 1:
        return np.empty((0, 2), dtype=np.int64)
    here = np.arange(n)
    r, c = here // cols, here % cols
    right, down = r * cols + (c + 1) % cols, ((r + 1) % rows) * cols + c
    return _canonical(np.concatenate([here, here]), np.concatenate([right, down]), n)


def _check_power_of_two(n: int) -> None:
    if n & (n - 1):
        lower = 1 << (n.bit_length() - 1)
        raise TopologyError(
            f"hypercube: needs a power-of-two number of nodes, got {n} (try {lower} or {2 * lower})"
        )


def hypercube_edges(n: int, seed: int = 0) -> np.ndarray:
    """Nodes are bit strings; an edge joins ids that differ in exactly one bit. n must be a power of 2."""
    _check_power_of_two(n)
    i = np.arange(n)
    low = [i[(i >> k) & 1 == 0] for k in range(n.bit_length() - 1)]
    if not low:
        return np.empty((0, 2), dtype=np.int64)
    return _canonical(np.concatenate(low), np.concatenate([a | (1 << k) for k, a in enumerate(low)]), n)


def exponential_edges(n: int, seed: int = 0) -> np.ndarray:
    """Undirected exponential graph: i joined to i ± 2^k (mod n) for every 2^k < n, duplicates merged."""
    i = np.arange(n)
    steps = [1 << k for k in range(max(n - 1, 0).bit_length())]
    if not steps:
        return np.empty((0, 2), dtype=np.int64)
    return _canonical(np.tile(i, len(steps)), np.concatenate([(i + s) % n for s in steps]), n)


def complete_edges(n: int, seed: int = 0) -> np.ndarray:
    """Every pair of nodes."""
    a, b = np.triu_indices(n, 1)
    return np.stack([a, b], axis=1).astype(np.int64)


def star_edges(n: int, seed: int = 0) -> np.ndarray:
    """Node 0 is the hub, joined to every other node."""
    return np.stack([np.zeros(n - 1, dtype=np.int64), np.arange(1, n, dtype=np.int64)], axis=1)


def random_edges(n: int, seed: int = 0) -> np.ndarray:
    """Seeded connected random graph: a random spanning tree plus each other pair with p = min(1, 2 ln n / n).

    The tree guarantees connectivity, which plain Erdős–Rényi does not; p = 2 ln n / n is twice the
    connectivity threshold, so the extra edges give an average degree of about 2 ln n. All draws come from
    one SplitMix64 stream: n - 1 for a Fisher–Yates shuffle, n - 1 for the tree, then the extra edges: up to
    RANDOM_PAIRWISE_MAX nodes one uniform draw per non-tree pair in lexicographic order, above it one draw per
    chosen edge, the geometric skip to the next chosen non-tree pair (the same G(n, p) distribution).
    """
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    js, used = _below_many(seed, 0, np.arange(n, 1, -1))
    order = list(range(n))
    for i, j in zip(range(n - 1, 0, -1), js.tolist(), strict=True):  # Fisher–Yates shuffle
        order[i], order[j] = order[j], order[i]
    # Random recursive tree: each node in shuffled order hangs off a uniformly chosen earlier one.
    parents, used = _below_many(seed, used, np.arange(1, n))
    shuffled = np.array(order, dtype=np.int64)
    tree = _canonical(shuffled[1:], shuffled[parents], n)
    tree_ranks = _pair_rank(tree[:, 0], tree[:, 1], n)
    p = min(1.0, 2.0 * math.log(n) / n)
    pick = _pairwise_picks if n <= RANDOM_PAIRWISE_MAX else _geometric_picks
    ranks = np.sort(np.concatenate([tree_ranks, pick(seed, used, n, tree_ranks, p)]))  # disjoint: no duplicates
    return _pairs_of_ranks(ranks, n)


def _row_starts(n: int) -> np.ndarray:
    """Lexicographic rank of pair (a, a + 1) for every a: pairs (a, b), a < b, are numbered row by row."""
    a = np.arange(n, dtype=np.int64)
    return a * (2 * n - a - 1) // 2


def _pair_rank(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    return np.asarray(_row_starts(n)[a] + (b - a - 1))


def _pairs_of_ranks(ranks: np.ndarray, n: int) -> np.ndarray:
    starts = _row_starts(n)
    a = np.searchsorted(starts, ranks, side="right") - 1
    return np.stack([a, ranks - starts[a] + a + 1], axis=1).astype(np.int64)


def _pairwise_picks(seed: int, used: int, n: int, tree_ranks: np.ndarray, p: float) -> np.ndarray:
    """Ranks of the extra edges, one uniform draw per non-tree pair in lexicographic order (tree pairs draw
    nothing): bit for bit the original scalar loop, in vectorised batches."""
    total = n * (n - 1) // 2
    chosen = []
    for first in range(0, total, _PAIR_CHUNK):
        ranks = np.arange(first, min(total, first + _PAIR_CHUNK), dtype=np.int64)
        before = np.searchsorted(tree_ranks, ranks)  # tree pairs ranked below each pair
        is_tree = tree_ranks[np.minimum(before, len(tree_ranks) - 1)] == ranks
        u = _uniform_at(seed, used + 1 + ranks - before)  # the draw this pair would get
        chosen.append(ranks[~is_tree & (u < p)])
    return np.concatenate(chosen)


def _geometric_picks(seed: int, used: int, n: int, tree_ranks: np.ndarray, p: float) -> np.ndarray:
    """Ranks of the extra edges by geometric skips: each draw U gives the number of non-tree pairs passed over,
    floor(log(1 - U) / log(1 - p)), before the next chosen one; O(n + m) instead of one draw per pair."""
    total = n * (n - 1) // 2 - len(tree_ranks)  # non-tree pairs, indexed 0 .. total - 1
    log_q = float(_det_log(np.array([1.0 - p]))[0])
    batch = int(p * total * 1.05) + 1024
    position, chosen = -1, []
    while position < total:
        u = _uniform_at(seed, np.arange(used + 1, used + 1 + batch, dtype=np.uint64))
        used += batch
        skips = np.floor(_det_log(1.0 - u) / log_q)  # 1 - u in (0, 1]: log is finite
        steps = np.minimum(skips, total).astype(np.int64) + 1
        positions = position + np.cumsum(steps)
        chosen.append(positions[positions < total])
        position = int(positions[-1])
        batch = 1024 + int(p * max(total - position, 0) * 1.05)
    picked = np.concatenate(chosen)
    # Non-tree index j → pair rank: add the tree pairs ranked at or below it.
    shift = tree_ranks - np.arange(len(tree_ranks))
    return np.asarray(picked + np.searchsorted(shift, picked, side="right"))


def edge_count(kind: str, n: int) -> int:
    """Edges of graph ``kind`` on n nodes (for ``random``: the expected count), before generating it."""
    bits = max(n - 1, 0).bit_length()
    if kind == "random":
        pairs = n * (n - 1) // 2
        return 0 if n < 2 else round((n - 1) + min(1.0, 2.0 * math.log(n) / n) * (pairs - (n - 1)))
    counts = {"ring": n if n > 2 else n - 1, "torus": 2 * n if n > 1 else 0, "hypercube": n * bits // 2,
              "exponential": n * bits, "complete": n * (n - 1) // 2, "star": n - 1}
    return counts[kind]


def _check_size(kind: str, n: int) -> None:
    """Refuse a graph too large to hold before building it, saying what it would cost."""
    edges = edge_count(kind, n)
    if edges > MAX_GENERATED_EDGES:
        gib = edges * BYTES_PER_EDGE / 2**30
        raise TopologyError(
            f"{kind}: {n:,} nodes would give {'about ' if kind in ('random', 'exponential') else ''}{edges:,} "
            f"edges, more than the {MAX_GENERATED_EDGES:,} peernet generates (about {gib:.1f} GiB of memory "
            f"to hold and check); use fewer nodes or a sparser graph (ring, torus, exponential, random)"
        )


_BUILDERS: dict[str, Callable[[int, int], np.ndarray]] = {
    "ring": ring_edges,
    "torus": torus_edges,
    "hypercube": hypercube_edges,
    "exponential": exponential_edges,
    "complete": complete_edges,
    "star": star_edges,
    "random": random_edges,
}


def generator_array(kind: str, n: int, seed: int = 0) -> np.ndarray:
    """Edges of graph ``kind`` on nodes 0..n-1 as an (m, 2) int64 array, a < b, sorted; TopologyError if kind or n
    is invalid or the graph is over MAX_GENERATED_EDGES."""
    if kind not in _BUILDERS:
        raise TopologyError(f"unknown topology kind {kind!r}; choose one of: {', '.join(GENERATORS)}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise TopologyError(f"{kind}: number of nodes must be an integer ≥ 1, got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TopologyError(f"{kind}: seed must be an integer, got {seed!r}")
    if kind == "torus":
        torus_shape(n)  # a bad size says so before its edge count is estimated
    if kind == "hypercube":
        _check_power_of_two(n)
    _check_size(kind, n)
    return _BUILDERS[kind](n, seed)


def generator_edges(kind: str, n: int, seed: int = 0) -> list[Edge]:
    """Sorted (a < b) edge list of graph ``kind`` on nodes 0..n-1; TopologyError if kind or n is invalid."""
    return [(a, b) for a, b in generator_array(kind, n, seed).tolist()]
