"""The fast read of a topology file's edges block gives exactly what the plain TOML parse gives, or steps aside."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peernet import topology_files
from peernet.core.topology import generate
from peernet.errors import TopologyError
from peernet.topology_files import load_topology, save_topology


def _outcome(path: Path) -> tuple[str, object]:
    try:
        topo = load_topology(path, key_files=False)
    except TopologyError as exc:
        return "error", str(exc)
    return "ok", (topo.fingerprint(), topo.nodes, topo.name, topo.edges)


def _both(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[tuple[str, object], tuple[str, object]]:
    fast = _outcome(path)
    with monkeypatch.context() as m:
        m.setattr(topology_files, "_parse_with_edge_block", lambda text: None)
        slow = _outcome(path)
    return fast, slow


@pytest.mark.parametrize("kind,n", [("ring", 9), ("torus", 12), ("hypercube", 16), ("random", 40), ("complete", 1)])
def test_saved_files_load_through_the_fast_path_as_through_tomllib(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, n: int) -> None:
    path = tmp_path / "t.toml"
    save_topology(generate(kind, n), path)
    assert topology_files._EDGE_BLOCK.search(path.read_text()) is not None  # it does take the fast path
    fast, slow = _both(path, monkeypatch)
    assert fast == slow and fast[0] == "ok"


HEAD = 'name = "x"\n'
NODES = "".join(f"\n[[nodes]]\nid = {i}\n" for i in range(4))
CASES = {
    "plain": HEAD + "edges = [[0, 1], [1, 2],\n  [2, 3],]\n" + NODES,
    "leading zero (TOML refuses it)": HEAD + "edges = [[0, 01], [1, 2], [2, 3]]\n" + NODES,
    "underscore and sign": HEAD + "edges = [[0, +1], [1, 2], [2, 3_0]]\n" + NODES,
    "comment inside": HEAD + "edges = [[0, 1], # the first\n [1, 2], [2, 3]]\n" + NODES,
    "in a multi-line string": 'name = """\nedges = [[0, 1]]\n"""\nedges = [[0, 1], [1, 2], [2, 3]]\n' + NODES,
    "only in a string": 'name = """\nedges = [[0, 1], [1, 2], [2, 3]]\n"""\n' + NODES,
    "in a table": HEAD + NODES + "edges = [[0, 1], [1, 2], [2, 3]]\n",
    "twice": HEAD + "edges = [[0, 1]]\nedges = [[1, 2], [2, 3]]\n" + NODES,
    "junk after": HEAD + "edges = [[0, 1], [1, 2], [2, 3]] x = 1\n" + NODES,
    "eleven digits": HEAD + "edges = [[0, 12345678901]]\n" + NODES,
    "empty": HEAD + "edges = []\n" + "\n[[nodes]]\nid = 0\n",
    "unknown node": HEAD + "edges = [[0, 1], [1, 2], [2, 7]]\n" + NODES,
    "self-loop": HEAD + "edges = [[0, 1], [1, 1], [2, 3]]\n" + NODES,
    "bad TOML elsewhere": HEAD + "edges = [[0, 1], [1, 2], [2, 3]]\n" + NODES + "id = = 2\n",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_odd_edge_blocks_end_as_the_plain_parse_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     case: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(CASES[case])
    fast, slow = _both(path, monkeypatch)
    assert fast == slow


_pair = st.tuples(st.integers(0, 12), st.integers(0, 12))
_sep = st.sampled_from([" ", "", "\n", "\t", "\r\n", " \n  "])


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(_pair, max_size=12), seps=st.lists(_sep, min_size=4, max_size=4), trailing=st.booleans(),
       n=st.integers(1, 13))
def test_generated_edge_blocks_agree_with_tomllib(tmp_path_factory: pytest.TempPathFactory,
                                                  pairs: list[tuple[int, int]], seps: list[str], trailing: bool,
                                                  n: int) -> None:
    a, b, c, d = seps
    items = f"{b},{c}".join(f"[{a}{x}{a},{a}{y}{a}]" for x, y in pairs)
    text = f"edges = [{d}{items}{',' if trailing and pairs else ''}{d}]\n" + "".join(
        f"\n[[nodes]]\nid = {i}\n" for i in range(n))
    path = tmp_path_factory.mktemp("fast") / "t.toml"
    path.write_text(text)
    with pytest.MonkeyPatch.context() as mp:
        fast, slow = _both(path, mp)
    assert fast == slow
