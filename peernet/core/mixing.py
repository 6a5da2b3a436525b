"""Gossip mixing: one node from its neighbours' tensors (daemon), or all nodes at once from sparse rows (simulator).

Both forms do the same arithmetic in the same order — ``own·W_ii`` first, then ``+ v_j·W_ij`` for the
neighbours in ascending id order, each term one fused multiply-add — so a node-stacked mix equals the
per-node mix bit for bit (tests/core/test_mixing.py). The self weight is ``1 − Σ_j W_ij`` summed in
that same order, which keeps a row stochastic when a neighbour is left out of a round.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from peernet.core.topology import Topology, mh_weight


def self_weight(weights: Iterable[float]) -> float:
    """``1 − Σ w`` with the weights added in the order given (callers pass them by ascending neighbour id)."""
    total = 0.0
    for w in weights:
        total += w
    return 1.0 - total


def mix_one(own: torch.Tensor, received: Mapping[int, torch.Tensor], weights: Mapping[int, float]) -> torch.Tensor:
    """Return ``W_ii·own + Σ_j W_ij·v_j`` with ``W_ii = 1 − Σ_j W_ij`` over the neighbours present.

    Neighbours are visited in sorted id order whatever order they arrived in, so every caller (simulator,
    daemon) adds the same terms in the same order and gets bit-identical results. Each term is one fused
    multiply-add (``add_`` with ``alpha``), as :class:`SparseMixing` does with ``addcmul_``.
    """
    order = sorted(received)
    out = own * self_weight(weights[j] for j in order)
    for j in order:
        out.add_(received[j], alpha=weights[j])
    return out


@dataclass(frozen=True)
class _Run:
    """Rows ``lo..hi-1`` of one slot take their neighbour from rows ``src..src+hi-lo-1``: a slice, no gather."""

    lo: int
    hi: int
    src: int
    w: torch.Tensor | float  # (hi-lo, 1) per-row weights, or one weight shared by the whole run


@dataclass(frozen=True)
class _Gather:
    """A slot whose neighbours follow no long runs (random graphs): gathered by index."""

    rows: torch.Tensor | None  # None: every row has this slot
    cols: torch.Tensor
    w: torch.Tensor  # (len(cols), 1)


_Slot = list[_Run] | _Gather


def _runs(members: list[tuple[int, int, float]]) -> list[tuple[int, int, int, list[float]]]:
    """Split (row, col, w) triples, by ascending row, into maximal runs of consecutive rows with col − row fixed."""
    runs: list[tuple[int, int, int, list[float]]] = []
    for row, col, w in members:
        if runs:
            lo, hi, src, ws = runs[-1]
            if row == hi and col == src + (hi - lo):
                ws.append(w)
                runs[-1] = (lo, hi + 1, src, ws)
                continue
        runs.append((row, row + 1, col, [w]))
    return runs


class SparseMixing:
    """A symmetric, doubly stochastic W kept as per-row neighbour lists: ``mix(V)`` costs O(E·P), never O(N²·P).

    ``rows[i]`` maps each neighbour j of node i to ``W_ij``. Slot k holds every row's k-th neighbour (by
    ascending id), so a row's terms are added in the same order as :func:`mix_one` adds them. On the
    generated graphs (ring, torus, hypercube, exponential) a slot is a few long runs of rows whose
    neighbour sits at a fixed offset, mixed as tensor slices with no copy; otherwise the slot is gathered.
    """

    def __init__(self, rows: Sequence[Mapping[int, float]]) -> None:
        self.n = len(rows)
        self.rows: tuple[dict[int, float], ...] = tuple({j: float(row[j]) for j in sorted(row)} for row in rows)
        self._self = torch.tensor([[self_weight(r.values())] for r in self.rows], dtype=torch.float64)
        self._slots = self._build_slots()
        self._cast: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, list[_Slot]]] = {}
        self._csr: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    @classmethod
    def of(cls, topology: Topology) -> SparseMixing:
        """The topology's own weights (Metropolis–Hastings, uniform or explicit), rows by node index."""
        ids = topology.ids
        return cls([{topology.index_of(j): topology.weight(i, j) for j in topology.neighbours(i)} for i in ids])

    @classmethod
    def metropolis(cls, n: int, edges: Iterable[tuple[int, int]], alive: Sequence[bool] | None = None) -> SparseMixing:
        """Metropolis–Hastings over the edges whose ends are both alive; a dead node keeps only itself.

        Degrees are counted over live edges, as each end would declare them, so W stays symmetric and
        doubly stochastic whatever subset of nodes is alive.
        """
        live = [True] * n if alive is None else list(alive)
        active = [(i, j) for i, j in edges if live[i] and live[j]]
        degree = [0] * n
        for i, j in active:
            degree[i] += 1
            degree[j] += 1
        rows: list[dict[int, float]] = [{} for _ in range(n)]
        for i, j in active:
            rows[i][j] = rows[j][i] = mh_weight(degree[i], degree[j])
        return cls(rows)

    def _build_slots(self) -> list[_Slot]:
        slots: list[_Slot] = []
        depth = max((len(r) for r in self.rows), default=0)
        for k in range(depth):
            members = [(i, *list(r.items())[k]) for i, r in enumerate(self.rows) if len(r) > k]
            runs = _runs(members)
            # Slices pay off while runs are long; a random graph's slots fall apart into single rows.
            if len(runs) <= 8 or len(runs) * 16 <= len(members):
                slots.append([_Run(lo, hi, src, ws[0] if len(set(ws)) == 1 else
                                   torch.tensor(ws, dtype=torch.float64).unsqueeze(1))
                              for lo, hi, src, ws in runs])
            else:
                rows = None if len(members) == self.n else torch.tensor([i for i, _, _ in members])
                slots.append(_Gather(rows, torch.tensor([j for _, j, _ in members]),
                                     torch.tensor([[w] for _, _, w in members], dtype=torch.float64)))
        return slots

    def _for(self, ref: torch.Tensor) -> tuple[torch.Tensor, list[_Slot]]:
        key = (ref.dtype, ref.device)
        if key not in self._cast:
            def cast(t: torch.Tensor | float) -> torch.Tensor | float:
                return t.to(device=ref.device, dtype=ref.dtype) if isinstance(t, torch.Tensor) else t

            slots: list[_Slot] = []
            for s in self._slots:
                if isinstance(s, _Gather):
                    slots.append(_Gather(None if s.rows is None else s.rows.to(ref.device), s.cols.to(ref.device),
                                         cast(s.w)))  # type: ignore[arg-type]
                else:
                    slots.append([_Run(r.lo, r.hi, r.src, cast(r.w)) for r in s])
            self._cast[key] = (self._self.to(device=ref.device, dtype=ref.dtype), slots)
        return self._cast[key]

    def mix(self, v: torch.Tensor) -> torch.Tensor:
        """``W @ v`` for node-stacked ``v (N, P)``; each row bit-identical to :func:`mix_one`."""
        own, slots = self._for(v)
        out = v * own
        for s in slots:
            if isinstance(s, _Gather):
                _mix_gathered(out, v, s)
                continue
            for r in s:
                dst, src = out[r.lo:r.hi], v[r.src:r.src + r.hi - r.lo]
                if isinstance(r.w, float):
                    dst.add_(src, alpha=r.w)
                else:
                    dst.addcmul_(src, r.w)
        return out

    def mix_csr(self, v: torch.Tensor) -> torch.Tensor:
        """``W @ v`` as one sparse CSR product: O(E·P) and a single pass over ``v`` per nonzero.

        Equal to the dense product to rounding (1e-12 in float64, tested) but not bit-identical to
        :func:`mix_one`: the library adds a row's terms in column order, self weight included. On graphs
        of high degree it is several times faster than the slot mix (docs/algorithms.md, "Mixing").
        """
        key = (v.dtype, v.device)
        if key not in self._csr:
            self._csr[key] = self._build_csr(v.dtype, v.device)
        return torch.sparse.mm(self._csr[key], v)

    def _build_csr(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        crow, cols, vals = [0], [], []
        for i, row in enumerate(self.rows):
            entries = sorted({**row, i: float(self._self[i, 0])}.items())
            cols += [j for j, _ in entries]
            vals += [w for _, w in entries]
            crow.append(len(cols))
        with warnings.catch_warnings():  # torch calls sparse CSR "beta"; sparse.mm on it is long supported
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(torch.tensor(crow), torch.tensor(cols), torch.tensor(vals, dtype=dtype),
                                           size=(self.n, self.n)).to(device)

    def dense(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The full ``(N, N)`` matrix, for tests and small graphs only."""
        W = torch.zeros(self.n, self.n, dtype=dtype)
        for i, row in enumerate(self.rows):
            for j, w in row.items():
                W[i, j] = w
            W[i, i] = float(self._self[i, 0])
        return W


def _mix_gathered(out: torch.Tensor, v: torch.Tensor, s: _Gather) -> None:
    """``out[rows] += w · v[cols]`` as one fused multiply-add per element (gather, update, scatter back)."""
    term = v.index_select(0, s.cols)
    if s.rows is None:
        out.addcmul_(term, s.w)
        return
    part = out.index_select(0, s.rows)
    part.addcmul_(term, s.w)
    out.index_copy_(0, s.rows, part)


def consensus_distance(stacked: torch.Tensor) -> float:
    """Mean over nodes of ‖x_i − x̄‖² for node-stacked parameters ``(N, P)``."""
    mean = stacked.mean(dim=0, keepdim=True)
    return float(((stacked - mean) ** 2).sum(dim=1).mean())
