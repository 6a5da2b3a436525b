"""Validation helpers for Topology: canonical edges, connectivity and explicit-weight checks."""

from __future__ import annotations

import math
from collections.abc import Iterable

from peernet.errors import TopologyError

STOCHASTIC_TOL = 1e-9  # how far a row of explicit weights may be from summing to 1
_SYMMETRY_TOL = 1e-12  # W_ab and W_ba listed separately must agree to rounding


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
    """Check explicit weights (known nodes, edges only, symmetric, rows summing to 1) and return them sorted,
    with every node's self weight (given, or what the row leaves)."""
    if not isinstance(raw, list | tuple):
        raise TopologyError(f"must be a list of [a, b, weight] triples, got {raw!r}", key=_EXPLICIT)
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
                and _is_num(entry[2]) and math.isfinite(entry[2])):
            raise TopologyError(f"each entry must be [a, b, weight] with a finite weight, got {_show(entry)}",
                                key=key)
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
