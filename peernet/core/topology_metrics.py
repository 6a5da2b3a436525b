"""Spectral gap and diameter of a topology: exact by symmetry where it has one, else ARPACK and eccentricity bounds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from peernet.core.topology_symmetry import Symmetry
from peernet.errors import TopologyError

if TYPE_CHECKING:
    from scipy.sparse import csc_matrix, csr_matrix

#: Largest n whose gap the automatic method computes with dense eigvalsh (n² memory, n³ time: 0.7 s at 2,000).
DENSE_GAP_MAX = 2000
#: Up to this many nodes the diameter search has no budget (at most n BFS), so it is always exact.
EXACT_DIAMETER_MAX = 2048
#: BFS work allowed above EXACT_DIAMETER_MAX, in node and edge visits (about 1 s of compiled BFS).
DIAMETER_WORK = 200_000_000
#: Above EXACT_DIAMETER_MAX the search also stops after this many BFS in a row that moved neither bound nor ruled
#: out a node besides their source, once the candidates left could not all be searched within the budget: on
#: expanders (random graphs) every node's eccentricity is D or D - 1 and only BFS from (nearly) every node could
#: close the last gap.
DIAMETER_STALL = 16
#: ARPACK's relative tolerance on the Ritz values: the gap is good to about this, far below the printed digits.
ARPACK_TOL = 1e-9
_LANCZOS_RESTARTS = 40  # about 800 products with W; a graph that needs more mixes slowly: shift-invert instead
_SHIFT = 1e-10  # shift-invert centre 1 + _SHIFT: just above the top eigenvalue 1, so λ₂ is the next nearest
_LEVEL_LOOP = 64  # BFS levels found one by one; deeper trees get their depths by pointer doubling
GAP_METHODS = ("auto", "dense", "sparse", "arpack")


def gap_of(rho: float) -> float:
    """1 − ρ, clamped to [0, 1] (rounding may put ρ a hair outside [0, 1])."""
    return float(min(1.0, max(0.0, 1.0 - rho)))


def dense_gap(w: np.ndarray) -> float:
    """The gap from all eigenvalues of a dense symmetric W (the second largest modulus)."""
    if len(w) == 1:
        return 1.0
    moduli = np.sort(np.abs(np.linalg.eigvalsh(w)))[::-1]
    return gap_of(float(moduli[1]))


def transform_gap(kind: str, row0: np.ndarray, shape: tuple[int, int]) -> float:
    """The gap of a W invariant under a regular translation group: its eigenvalues are the group's Fourier
    transform of the first row ``row0`` (``kind`` from Symmetry.transform; ``shape`` (n / s, s) for 'fft2')."""
    if kind == "fft":
        eig = np.fft.rfft(row0).real
    elif kind == "fft2":
        eig = np.fft.rfft2(row0.reshape(shape)).real.ravel()
    else:
        eig = _walsh(row0)
    return gap_of(float(np.abs(eig[1:]).max()))  # entry 0: the trivial character, eigenvalue 1 (the row sum)


def _walsh(x: np.ndarray) -> np.ndarray:
    """Fast Walsh–Hadamard transform (unnormalised) of a vector whose length is a power of two."""
    y = x.astype(np.float64).copy()
    h = 1
    while h < len(y):
        pairs = y.reshape(-1, 2, h)
        pairs[:, 0, :], pairs[:, 1, :] = pairs[:, 0, :] + pairs[:, 1, :], pairs[:, 0, :] - pairs[:, 1, :]
        h *= 2
    return y


def arpack_gap(offdiag: csr_matrix, self_w: np.ndarray, *, restarts: int = _LANCZOS_RESTARTS,
               shift_invert: bool = True) -> float:
    """The gap by ARPACK, for W = ``offdiag`` + diag(``self_w``): Lanczos for the largest |λ| of W − 11ᵀ/n (W
    with its top eigenpair 1, 1/√n removed); if that has not converged after ``restarts`` restarts,
    shift-invert around 1 (and around −1 if needed). TopologyError when neither converges."""
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh

    n = offdiag.shape[0]

    def product(x: np.ndarray) -> np.ndarray:
        x = x.reshape(-1)
        return np.asarray(offdiag @ x + self_w * x - x.mean())

    op = LinearOperator((n, n), matvec=product, dtype=np.float64)
    try:
        vals = eigsh(op, k=1, which="LM", v0=_start(n), tol=ARPACK_TOL, maxiter=restarts, return_eigenvectors=False)
        return gap_of(float(np.abs(vals).max()))
    except ArpackNoConvergence:
        if not shift_invert:
            raise TopologyError(f"spectral gap: ARPACK (Lanczos) did not converge in {restarts} restarts") from None
    except ArpackError as exc:
        probe = np.random.default_rng(n).standard_normal(n)
        if np.linalg.norm(product(probe - probe.mean())) <= 1e-12 * np.linalg.norm(probe):
            return 1.0  # W − 11ᵀ/n kills a random vector, so it is 0 (W = 11ᵀ/n, complete mixing): ARPACK's
            # Krylov space collapses at once (error -9) on such a W
        raise TopologyError(f"spectral gap: ARPACK failed: {exc}") from None
    from scipy.sparse import diags

    return _shift_invert_gap((offdiag + diags(self_w)).tocsc(), self_w)


def _start(n: int) -> np.ndarray:
    """A fixed start vector orthogonal to the top eigenvector, so every run gives the same result."""
    v = np.cos(np.arange(n) * 2.399963229728653)  # golden angle: no period, no accidental symmetry
    return np.asarray(v - v.mean())


def _shift_invert_gap(w: csc_matrix, self_w: np.ndarray) -> float:
    """λ₂ as the eigenvalue nearest 1 + _SHIFT after 1 itself (a sparse LU of W − σI; cheap on the sparse,
    low-dimensional graphs that mix slowly); λ_n bounded by Gershgorin (λ ≥ 2 W_ii − 1) and computed only when
    that bound does not already put |λ_n| below |λ₂|."""
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigsh

    try:
        top = eigsh(w, k=2, sigma=1.0 + _SHIFT, which="LM", v0=_start(w.shape[0]), tol=ARPACK_TOL,
                    return_eigenvectors=False)
        second = float(np.min(top))
        if 1.0 - 2.0 * float(self_w.min()) <= abs(second) and second >= 0:
            return gap_of(second)
        bottom = eigsh(w, k=1, sigma=-1.0 - _SHIFT, which="LM", v0=_start(w.shape[0]), tol=ARPACK_TOL,
                       return_eigenvectors=False)
        return gap_of(max(abs(second), abs(float(bottom[0]))))
    except (ArpackNoConvergence, ArpackError, RuntimeError) as exc:
        raise TopologyError(f"spectral gap: ARPACK did not converge, neither Lanczos nor shift-invert ({exc}); "
                            "the gap of this graph is not known") from None


def spectral_gap(method: str, n: int, dense: Callable[[], np.ndarray],
                 sparse: Callable[[], tuple[csr_matrix, np.ndarray]], row0: Callable[[], np.ndarray],
                 sym: Callable[[], Symmetry]) -> float:
    """The gap by ``method`` (GAP_METHODS: 'auto' is dense up to DENSE_GAP_MAX nodes, else 'sparse', which is
    exact by symmetry when W has one, else ARPACK). The arguments after n build, only when the chosen path needs
    them: the dense W, (W's off-diagonal CSR, self weights), W's first row, the Symmetry that keeps W."""
    if method not in GAP_METHODS:
        raise TopologyError(f"spectral gap: unknown method {method!r}; choose one of: {', '.join(GAP_METHODS)}")
    if n == 1:
        return 1.0
    if method == "dense" or (method == "auto" and n <= DENSE_GAP_MAX) or n < 3:
        return dense_gap(dense())
    symmetry = sym() if method != "arpack" else None
    kind = symmetry.transform() if symmetry is not None else None
    if symmetry is not None and kind is not None:
        return transform_gap(kind, row0(), (n // symmetry.shift, symmetry.shift))
    offdiag, self_w = sparse()
    return arpack_gap(offdiag, self_w)


# -- diameter ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Diameter:
    """The diameter, or bounds on it: ``lower`` ≤ diameter ≤ ``upper`` (equal when exact), after ``bfs`` BFS runs."""

    lower: int
    upper: int
    bfs: int

    @property
    def exact(self) -> bool:
        return self.lower == self.upper

    @property
    def value(self) -> int | None:
        """The diameter when it is known exactly, else None."""
        return self.lower if self.exact else None

    def __str__(self) -> str:
        if self.exact:
            return str(self.lower)
        return f"{self.lower}–{self.upper} (bounds; exact search stopped after {self.bfs} BFS)"

    def as_json(self) -> dict[str, Any]:
        """JSON fields: ``diameter`` (null unless exact) and ``diameter_bounds`` [lower, upper]."""
        return {"diameter": self.value, "diameter_bounds": [self.lower, self.upper]}


def _depths(order: np.ndarray, pred: np.ndarray, source: int) -> tuple[np.ndarray, int]:
    """Hop distance of every node from ``source``, from a BFS order and its predecessors, and the work it took.

    BFS dequeues parents in order, so the parents' positions are non-decreasing along the order and each level
    is a contiguous run found with one binary search; past _LEVEL_LOOP levels pointer doubling is cheaper."""
    n = len(order)
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    parent_pos = pos[pred[order[1:]]]
    bounds = [0, 1]
    while bounds[-1] < n and len(bounds) <= _LEVEL_LOOP:
        bounds.append(1 + int(np.searchsorted(parent_pos, bounds[-1])))
    if bounds[-1] == n:
        depth = np.empty(n, dtype=np.int64)
        depth[order] = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
        return depth, n
    hop = pred.astype(np.int64)
    hop[source] = source
    depth = np.ones(n, dtype=np.int64)
    depth[source] = 0
    rounds = 0
    while not (hop == source).all():  # invariant: depth[v] hops from v up to hop[v]
        depth += depth[hop]
        hop = hop[hop]
        rounds += 1
    return depth, n * (3 + 3 * rounds)


def _budget(n: int, max_bfs: int | None) -> tuple[int, float, int]:
    """(most BFS runs, most work, most runs in a row without progress) for the diameter search."""
    if max_bfs is not None:
        return max_bfs, float("inf"), max_bfs
    if n <= EXACT_DIAMETER_MAX:
        return n, float("inf"), n
    return n, float(DIAMETER_WORK), DIAMETER_STALL


class _Bounds:
    """Eccentricity bounds of the orbit representatives and the diameter bounds they give (BoundingDiameters)."""

    def __init__(self, reps: np.ndarray, degree: np.ndarray, n: int) -> None:
        self.reps, self.degree = reps, degree
        self.low, self.high = np.zeros(len(reps), dtype=np.int64), np.full(len(reps), n, dtype=np.int64)
        self.cand = np.ones(len(reps), dtype=bool)
        self.lower, self.upper = 0, n

    def done(self) -> bool:
        return self.lower >= self.upper or not self.cand.any()

    def select(self, runs: int) -> int:
        """The next BFS source (a position in reps): the highest degree first, then alternately the largest upper
        and the smallest lower eccentricity bound (ties to the higher degree), as Takes & Kosters do."""
        scale = int(self.degree.max()) + 1
        if runs == 0 or runs % 2 == 1:
            score = np.where(self.cand, (self.high if runs else 0) * scale + self.degree, -1)
            return int(score.argmax())
        score = np.where(self.cand, self.low * scale - self.degree, np.iinfo(np.int64).max)
        return int(score.argmin())

    def update(self, depth: np.ndarray) -> bool:
        """Take one BFS's distances; whether a bound moved or a node besides the source was ruled out."""
        ecc, d = int(depth.max()), depth[self.reps]
        self.low = np.maximum(self.low, np.maximum(ecc - d, d))
        self.high = np.minimum(self.high, ecc + d)
        before = (self.lower, self.upper, int(self.cand.sum()))
        self.lower = max(self.lower, int(self.low.max()))
        self.upper = min(self.upper, 2 * ecc, int(self.high.max()))
        self.cand &= ~(((self.high <= self.lower) & (2 * self.low >= self.upper)) | (self.low == self.high))
        return (self.lower, self.upper) != before[:2] or int(self.cand.sum()) < before[2] - 1

    def result(self, runs: int) -> Diameter:
        # No candidate left: every representative's eccentricity is known to be ≤ lower, so lower is exact.
        return Diameter(self.lower, self.lower if not self.cand.any() else self.upper, runs)


def diameter(indptr: np.ndarray, indices: np.ndarray, reps: np.ndarray, max_bfs: int | None = None) -> Diameter:
    """Diameter of the connected graph in CSR form (``indptr``, ``indices``; both directions of every edge),
    whose eccentricity is constant on the orbit of each node of ``reps`` (one per orbit).

    BoundingDiameters over the representatives: every BFS from v gives, for every w, max(ecc(v) − d, d) ≤ ecc(w)
    ≤ ecc(v) + d with d = d(v, w); a representative whose bounds cannot move the diameter's bounds is dropped.
    It stops when the bounds meet or no candidate is left (exact), or when the budget is spent (bounds): at most
    ``max_bfs`` BFS if given, else none up to EXACT_DIAMETER_MAX nodes, else DIAMETER_WORK / DIAMETER_STALL.
    """
    n = len(indptr) - 1
    if n == 1:
        return Diameter(0, 0, 0)
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import breadth_first_order

    graph = csr_matrix((np.ones(len(indices), dtype=np.int8), indices, indptr), shape=(n, n))
    bounds = _Bounds(reps, np.diff(indptr)[reps], n)
    max_runs, max_work, max_stall = _budget(n, max_bfs)
    runs, work, stall = 0, 0.0, 0
    while not bounds.done() and runs < max_runs and work < max_work and stall < max_stall:
        source = int(reps[bounds.select(runs)])
        order, pred = breadth_first_order(graph, source, directed=True, return_predecessors=True)
        depth, cost = _depths(order, pred, source)
        runs, work = runs + 1, work + cost + n + len(indices)
        # Stalling counts only once a BFS from every candidate left would not fit in the budget anyway.
        hopeless = int(bounds.cand.sum()) * (cost + n + len(indices)) > max_work - work
        stall = 0 if bounds.update(depth) or not hopeless else stall + 1
    return bounds.result(runs)
