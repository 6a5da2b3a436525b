"""What a daemon can run: endpoints, CURVE key values, and the combinatorial spectral-gap check against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st
from zmq.utils import z85

from peernet.core.topology_limits import (
    _P25519,
    _SMALL_ORDER,
    MAX_NODE_ID,
    check_spectral_gap,
    endpoint_problem,
    finite_number,
    public_key_problem,
    z85_problem,
)
from peernet.errors import TopologyError

TOL = 1e-9


@pytest.mark.parametrize("endpoint", ["tcp://10.0.0.3:5555", "tcp://[::1]:1", "tcp://[fe80::1%eth0]:65535",
                                      "tcp://node-3.example.org:5550", "tcp://eth0:5550", "tcp://localhost:5550",
                                      "ipc:///run/peernet/node3", "ipc://@abstract", "ipc://relative/path"])
def test_endpoints_a_node_can_bind_and_dial_are_accepted(endpoint: str) -> None:
    assert endpoint_problem(endpoint) is None


def test_max_node_id_is_what_the_routing_id_and_the_bootstrap_carry() -> None:
    assert MAX_NODE_ID == 2**31 - 1 and len(str(MAX_NODE_ID)) == 10


@given(st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_endpoint_problem_is_total_and_what_it_accepts_parses(text: str) -> None:
    problem = endpoint_problem(text)
    if problem is None:  # accepted: tcp://HOST:PORT with a real port, or ipc:// with a short path
        scheme, _, address = text.partition("://")
        assert scheme in ("tcp", "ipc") and text.isprintable()
        if scheme == "tcp":
            host, _, port = address.rpartition(":")
            assert host and 1 <= int(port) <= 65535 and host not in ("*", "0.0.0.0", "[::]")
        else:
            assert 0 < len(address.encode()) <= 107


def test_z85_keys_must_decode() -> None:
    public, _ = zmq.curve_keypair()
    assert z85_problem(public.decode()) is None and public_key_problem(public.decode()) is None
    assert "does not decode: characters 1-5" in str(z85_problem("%" * 40))
    assert "characters 36-40" in str(z85_problem(public.decode()[:35] + "#####"))
    assert z85_problem("0" * 39) == "must be 40 z85 characters, got 39 characters"
    assert z85_problem("~" * 40) == "has characters outside z85: '~'"


@given(st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#",
               min_size=40, max_size=40))
@settings(max_examples=300, deadline=None)
def test_z85_check_agrees_with_pyzmq(text: str) -> None:
    try:
        decoded: bytes | None = z85.decode(text)
    except Exception:  # pyzmq fails with struct.error on a group above 2**32 - 1
        decoded = None
    assert (z85_problem(text) is None) == (decoded is not None)
    if decoded is not None:
        assert z85.encode(decoded).decode() == text


@pytest.mark.parametrize("u", sorted(_SMALL_ORDER))
@pytest.mark.parametrize("alias", [0, _P25519, 2**255])  # non-canonical forms and the ignored top bit
def test_small_order_points_are_refused_in_every_form(u: int, alias: int) -> None:
    value = u + alias
    if value >= 2**256 or (alias == _P25519 and value >= 2**255):  # only u < 19 has a second form below 2**255
        return
    key = z85.encode(value.to_bytes(32, "little")).decode()
    assert "small-order Curve25519 point" in str(public_key_problem(key))


@pytest.mark.parametrize(("value", "ok"), [(0.5, True), (1, True), (10**20, True), (10**400, False),
                                           (float("nan"), False), (float("inf"), False), (True, False), ("1", False)])
def test_finite_number(value: object, ok: bool) -> None:
    assert finite_number(value) is ok


# -- the spectral-gap check agrees with the eigenvalues --------------------------------------------------------


@st.composite
def weighted_graphs(draw: st.DrawFn) -> tuple[tuple[int, ...], list[tuple[int, int, float]], np.ndarray]:
    """A connected graph with a symmetric, doubly stochastic W whose weights are often exactly 0."""
    n = draw(st.integers(2, 7))
    ids = tuple(range(n))
    edges = {(min(i, j), max(i, j)) for i in range(1, n) for j in [draw(st.integers(0, i - 1))]}
    extra = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=n))
    edges |= {(min(a, b), max(a, b)) for a, b in extra if a != b}
    weights = {e: draw(st.sampled_from([0.0, 0.0, 0.1, 0.25, 0.5, 1.0])) for e in sorted(edges)}
    w = np.zeros((n, n))
    for (a, b), x in weights.items():
        w[a, b] = w[b, a] = x
    w /= max(1.0, w.sum(axis=1).max())  # rows of at most 1; a row of exactly 1 leaves a self weight of 0
    explicit = [(a, b, float(w[a, b])) for a, b in sorted(edges)]
    diag = 1.0 - w.sum(axis=1)
    diag[diag < 1e-12] = 0.0  # rounding, where 0 is meant
    np.fill_diagonal(w, diag)
    explicit += [(i, i, float(diag[i])) for i in ids]
    return ids, explicit, w


@given(weighted_graphs())
@settings(max_examples=300, deadline=None)
def test_gap_check_agrees_with_eigenvalues(case: tuple[tuple[int, ...], list[tuple[int, int, float]], np.ndarray]
                                           ) -> None:
    ids, explicit, w = case
    moduli = np.sort(np.abs(np.linalg.eigvalsh(w)))[::-1]
    no_gap = 1.0 - moduli[1] < 1e-12
    try:
        check_spectral_gap(ids, explicit, zero=TOL)
        refused = False
    except TopologyError as exc:
        refused = True
        assert exc.key == "explicit_weights" and "W has no spectral gap" in exc.reason
    assert refused == no_gap, (explicit, moduli)
