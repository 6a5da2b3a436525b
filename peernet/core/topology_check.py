"""Validation helpers for Topology: canonical edges, connectivity and explicit-weight checks."""

from __future__ import annotations

import gc
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import chain

import numpy as np

from peernet.core.topology_limits import finite_number
from peernet.errors import TopologyError, quoted

STOCHASTIC_TOL = 1e-9  # how far a row of explicit weights may be from summing to 1
_SYMMETRY_TOL = 1e-12  # W_ab and W_ba listed separately must agree to rounding


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _show(entry: object) -> str:
    """Render a tuple or list entry the way it is written in TOML, e.g. ``[0, 1]``."""
    if isinstance(entry, list | tuple):  # bounded: an entry is user text, maybe huge or full of escapes
        return "[" + ", ".join(quoted(v, 40) for v in entry[:4]) + (", ...]" if len(entry) > 4 else "]")
    return quoted(entry)


def _ids(ids: Iterable[int], limit: int = 8) -> str:
    ids = list(ids)
    shown = ", ".join(map(str, ids[:limit]))
    return f"[{shown}, ... ({len(ids)} nodes)]" if len(ids) > limit else f"[{shown}]"


def _canonical_edges(raw: object, ids: set[int]) -> tuple[tuple[int, int], ...]:
    if not isinstance(raw, list | tuple):
        raise TopologyError(f"edges must be a list of [a, b] pairs, got {quoted(raw)}", key="edges")
    seen: dict[tuple[int, int], object] = {}
    for entry in raw:
        if not (isinstance(entry, list | tuple) and len(entry) == 2 and all(map(_is_int, entry))):
            raise TopologyError(
                f"each edge must be a pair of node ids like [0, 1], got {_show(entry)}", key="edges"
            )
        a, b = entry
        for end in (a, b):
            if end not in ids:
                raise TopologyError(f"edge {_show(entry)} names unknown node {quoted(end)}", key="edges")
        if a == b:
            raise TopologyError(f"edge {_show(entry)} is a self-loop", key="edges")
        pair = (min(a, b), max(a, b))
        if pair in seen:
            raise TopologyError(f"edge {_show(entry)} duplicates edge {_show(seen[pair])}", key="edges")
        seen[pair] = entry
    return tuple(sorted(seen))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: building a million tuples of ints (which hold no cycles) otherwise
    sets off hundreds of collections that find nothing and take half the time."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _plain_pairs(raw: object) -> np.ndarray | None:
    """The (m, 2) int64 endpoints when ``raw`` is a list or tuple of [a, b] lists or tuples of plain ints (or an
    (m, 2) integer array); None for anything else, which ``_canonical_edges`` then judges entry by entry."""
    if isinstance(raw, np.ndarray):
        ok = raw.ndim == 2 and raw.shape[1] == 2 and raw.dtype.kind in "iu" and (raw.size == 0 or raw.min() >= 0)
        return raw.astype(np.int64) if ok and (raw.size == 0 or raw.max() < 2**62) else None
    if not isinstance(raw, list | tuple):
        return None
    if not raw:
        return np.empty((0, 2), dtype=np.int64)
    # Type and length checks over the whole list in C (map/set) instead of one isinstance per entry.
    if not set(map(type, raw)) <= {tuple, list} or set(map(len, raw)) != {2}:
        return None
    flat = list(chain.from_iterable(raw))
    if set(map(type, flat)) != {int}:  # exactly int: bools and int subclasses take the careful path
        return None
    try:
        return np.fromiter(flat, dtype=np.int64, count=len(flat)).reshape(-1, 2)
    except OverflowError:
        return None


def canonical_edge_arrays(raw: object, ids: tuple[int, ...]
                          ) -> tuple[tuple[tuple[int, int], ...], np.ndarray, np.ndarray]:
    """``_canonical_edges`` in numpy: the canonical edge tuple and, per edge, the index (position in the sorted
    ``ids``) of its smaller and larger end. Any defect sends the input to ``_canonical_edges``, which raises
    the message it always has, for the first bad entry."""
    pairs = _plain_pairs(raw)
    n = len(ids)
    ids_arr = np.fromiter(ids, dtype=np.int64, count=n)
    if pairs is not None:
        contiguous = ids_arr[0] == 0 and ids_arr[-1] == n - 1  # ids 0..n-1: an id is its own index
        idx = pairs if contiguous else np.searchsorted(ids_arr, pairs)
        known = (pairs >= 0) & (pairs < n) if contiguous else ids_arr[np.minimum(idx, n - 1)] == pairs
        lo, hi = np.minimum(idx[:, 0], idx[:, 1]), np.maximum(idx[:, 0], idx[:, 1])
        keys = lo * n + hi
        in_order = bool(np.all(keys[1:] > keys[:-1]))
        if not in_order:
            order = np.argsort(keys, kind="stable")
            lo, hi, keys = lo[order], hi[order], keys[order]
        if known.all() and not (lo == hi).any() and (in_order or not (keys[1:] == keys[:-1]).any()):
            canonical = in_order and bool(np.all(idx[:, 0] < idx[:, 1]))
            if canonical and isinstance(raw, tuple) and all(type(e) is tuple for e in raw):
                return raw, lo, hi  # already canonical (a copy of a Topology's edges): keep the very tuple
            names = list(ids)  # the ids' own int objects: 1.2M edges do not allocate 2.4M new ints
            with _gc_paused():
                edges = tuple(zip(map(names.__getitem__, lo.tolist()), map(names.__getitem__, hi.tolist()),
                                  strict=True))
            return edges, lo, hi
    edges = _canonical_edges(raw.tolist() if isinstance(raw, np.ndarray) else raw, set(ids))
    index = {node: i for i, node in enumerate(ids)}  # reached only by inputs that are valid but not plain
    lo = np.array([index[a] for a, _ in edges], dtype=np.int64)
    hi = np.array([index[b] for _, b in edges], dtype=np.int64)
    return edges, lo, hi


#: Above this many edges connectivity is checked by scipy's compiled components, below by union-find here
#: (so a daemon on a small topology never imports scipy).
_SCIPY_EDGES = 50_000


def _component_labels(n: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A label per node index, equal for nodes in one connected component."""
    if len(lo) > _SCIPY_EDGES:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        graph = coo_matrix((np.ones(len(lo), dtype=np.int8), (lo, hi)), shape=(n, n))
        return np.asarray(connected_components(graph, directed=False)[1])
    parent = list(range(n))  # union-find: components in near-linear time

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
        parent[root(a)] = root(b)
    return np.array([root(i) for i in range(n)], dtype=np.int64)


def _check_connected(ids: tuple[int, ...], lo: np.ndarray, hi: np.ndarray) -> None:
    """Raise unless the graph with edges (ids[lo[e]], ids[hi[e]]) is connected; the message names a node that
    cannot be reached and lists the components."""
    labels = _component_labels(len(ids), lo, hi)
    if len(ids) < 2 or (labels == labels[0]).all():
        return
    groups: dict[int, list[int]] = {}
    for i, label in zip(ids, labels.tolist(), strict=True):
        groups.setdefault(label, []).append(i)
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
    """Check explicit weights (known nodes, edges only, symmetric, rows summing to 1) and return them sorted,
    with every node's self weight (given, or what the row leaves)."""
    if not isinstance(raw, list | tuple):
        raise TopologyError(f"must be a list of [a, b, weight] triples, got {quoted(raw)}", key=_EXPLICIT)
    given, self_w = _explicit_entries(raw, set(ids), set(edges))
    off: dict[int, list[float]] = {i: [] for i in ids}
    for a, b in edges:
        if (a, b) not in given:
            raise TopologyError(f"edge [{a}, {b}] has no explicit weight (every edge needs one)", key=_EXPLICIT)
        off[a].append(given[(a, b)])
        off[b].append(given[(a, b)])
    for i in ids:
        self_w[i] = _self_weight(i, math.fsum(off[i]), self_w.get(i))
    return tuple(sorted([(a, b, w) for (a, b), w in given.items()] + [(i, i, w) for i, w in self_w.items()]))


_EXPLICIT = "explicit_weights"


def _explicit_entries(raw: list[object] | tuple[object, ...], known: set[int], edge_set: set[tuple[int, int]]
                      ) -> tuple[dict[tuple[int, int], float], dict[int, float]]:
    """Each [a, b, weight] entry checked: edge weights by (min, max) pair, and the self weights given."""
    key = _EXPLICIT
    given: dict[tuple[int, int], float] = {}
    self_w: dict[int, float] = {}
    listed: set[tuple[int, int]] = set()
    for entry in raw:
        if not (isinstance(entry, list | tuple) and len(entry) == 3 and _is_int(entry[0]) and _is_int(entry[1])
                and finite_number(entry[2])):
            raise TopologyError(f"each entry must be [a, b, weight] with a finite weight, got {_show(entry)}",
                                key=key)
        a, b, w = entry[0], entry[1], float(entry[2])
        for end in (a, b):
            if end not in known:
                raise TopologyError(f"explicit weight {_show(entry)} names unknown node {quoted(end)}", key=key)
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
            raise TopologyError(f"explicit weight {_show(entry)} is for [{a}, {b}], which is not an edge", key=key)
        if pair in given and abs(given[pair] - w) > _SYMMETRY_TOL:
            raise TopologyError(f"explicit weights are not symmetric: W[{b}][{a}] = {given[pair]!r} but "
                                f"W[{a}][{b}] = {w!r}", key=key)
        given.setdefault(pair, w)
    return given, self_w


def _self_weight(i: int, edge_sum: float, given: float | None) -> float:
    """Node ``i``'s self weight: the given one if its row sums to 1, else what the edge weights leave."""
    if given is not None:
        total = edge_sum + given
        if abs(total - 1.0) > STOCHASTIC_TOL:
            raise TopologyError(f"W is not doubly stochastic: row of node {i} sums to {total!r} (self weight "
                                f"{given!r} + edge weights {edge_sum!r}); it must be 1 within {STOCHASTIC_TOL}",
                                key=_EXPLICIT)
        return given
    if edge_sum > 1.0 + STOCHASTIC_TOL:
        raise TopologyError(f"W is not doubly stochastic: edge weights of node {i} sum to {edge_sum!r} > 1, "
                            "so its self weight would be negative", key=_EXPLICIT)
    return max(0.0, 1.0 - edge_sum)  # max: rounding may leave -1e-16 where 0 is meant
