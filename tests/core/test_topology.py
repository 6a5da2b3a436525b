"""Tests for topologies: generators, mixing weights, metrics, validation messages and the TOML round trip."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from peernet.core.topology import GENERATORS, NodeSpec, Topology, generate, mh_weight
from peernet.errors import ConfigError, TopologyError
from peernet.security.keys import ensure_keypairs
from peernet.topology_files import load_topology, parse_topology, save_topology, topology_to_toml

KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # a valid z85 CURVE public key (40 chars)
KEY3 = "*f9$/l?q4>aa&3A!V&>}!Xj(.c$0cCwdPKr2Irt%"  # another one


def valid_n(kind: str, n: int) -> int:
    """Map any n >= 1 to a size the generator accepts."""
    if kind == "hypercube":
        return 1 << (n.bit_length() - 1)
    if kind == "torus":
        return 1 if n < 9 else 3 * (n // 3)
    return n


def connected(t: Topology) -> bool:
    seen, todo = {t.ids[0]}, [t.ids[0]]
    while todo:
        for b in t.neighbours(todo.pop()):
            if b not in seen:
                seen.add(b)
                todo.append(b)
    return len(seen) == t.n


# -- generators --------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(GENERATORS),
    n=st.integers(1, 40),
    seed=st.integers(0, 2**32),
    weights=st.sampled_from(["metropolis-hastings", "uniform"]),
)
def test_generated_graphs_are_connected_with_symmetric_doubly_stochastic_w(
    kind: str, n: int, seed: int, weights: str
) -> None:
    t = generate(kind, valid_n(kind, n), seed=seed, weights=weights)
    assert connected(t)
    assert all(a < b for a, b in t.edges) and list(t.edges) == sorted(set(t.edges))
    w = t.mixing_matrix().numpy()
    assert np.array_equal(w, w.T)
    assert np.allclose(w.sum(axis=1), 1.0, atol=1e-12, rtol=0)
    assert (w >= 0).all()
    assert 0.0 <= t.spectral_gap() <= 1.0
    assert parse_topology(tomllib.loads(topology_to_toml(t))) == t


@pytest.mark.parametrize(
    ("kind", "n", "edges", "degree"),
    [
        ("ring", 8, 8, (2, 2)),
        ("ring", 2, 1, (1, 1)),
        ("torus", 12, 24, (4, 4)),
        ("hypercube", 8, 12, (3, 3)),
        ("exponential", 8, 20, (5, 5)),
        ("complete", 6, 15, (5, 5)),
        ("star", 6, 5, (1, 5)),
    ],
)
def test_generator_sizes(kind: str, n: int, edges: int, degree: tuple[int, int]) -> None:
    t = generate(kind, n)
    assert (t.n, len(t.edges), t.degree_range()) == (n, edges, degree)


def test_generator_neighbourhoods() -> None:
    assert generate("exponential", 8).neighbours(0) == (1, 2, 4, 6, 7)
    assert generate("hypercube", 8).neighbours(5) == (1, 4, 7)
    assert generate("star", 5).neighbours(0) == (1, 2, 3, 4)
    assert generate("star", 5).neighbours(3) == (0,)
    assert generate("torus", 9).neighbours(0) == (1, 2, 3, 6)


def test_random_is_deterministic_from_seed() -> None:
    a, b, c = generate("random", 30, seed=7), generate("random", 30, seed=7), generate("random", 30, seed=8)
    assert a == b and a.fingerprint() == b.fingerprint()
    assert a.edges != c.edges
    assert a.name == "random-30-seed7"


@pytest.mark.parametrize(
    ("kind", "n", "message"),
    [
        ("torus", 7, "7 nodes cannot be arranged"),
        ("torus", 10, "nearest sizes that can: 9 or 12"),
        ("hypercube", 6, "power-of-two number of nodes, got 6 (try 4 or 8)"),
        ("ring", 0, "must be an integer ≥ 1"),
        ("mesh", 4, "unknown topology kind 'mesh'"),
    ],
)
def test_generator_rejects_bad_sizes(kind: str, n: int, message: str) -> None:
    with pytest.raises(TopologyError, match=None) as info:
        generate(kind, n)
    assert message in str(info.value)


# -- weights and metrics -----------------------------------------------------------------------------------


def test_ring8_mh_weights_and_spectral_gap() -> None:
    t = generate("ring", 8)
    assert t.weight(0, 1) == pytest.approx(1 / 3) and t.weight(0, 0) == pytest.approx(1 / 3)
    assert t.weight(0, 4) == 0.0
    assert t.spectral_gap() == pytest.approx(1 - (1 / 3 + 2 / 3 * math.cos(2 * math.pi / 8)), abs=1e-9)
    assert t.diameter() == 4


def test_mh_weights_on_irregular_graph() -> None:
    t = generate("star", 4)  # hub degree 3, leaves degree 1
    assert mh_weight(3, 1) == 0.25
    assert t.weight(1, 0) == 0.25 and t.weight(1, 1) == 0.75 and t.weight(0, 0) == 0.25
    u = generate("star", 4, weights="uniform")
    assert u.weight(0, 2) == 0.25 and u.weight(0, 0) == 0.25


def test_mixing_matrix_dtype_order_and_copy() -> None:
    t = Topology(nodes=(NodeSpec(10), NodeSpec(3), NodeSpec(7)), edges=((10, 3), (3, 7)))
    assert t.ids == (3, 7, 10) and t.index_of(10) == 2 and t.edges == ((3, 7), (3, 10))
    as_lists: Any = {
        "nodes": [NodeSpec(3), NodeSpec(7), NodeSpec(10)],
        "edges": [[3, 10], [7, 3]],
        "explicit": [],
    }
    same = Topology(**as_lists)
    assert same == t and hash(same) == hash(t)  # lists and either edge direction normalise to one form
    w = t.mixing_matrix(torch.float32)
    assert w.dtype == torch.float32 and w.shape == (3, 3)
    assert w[t.index_of(3), t.index_of(10)] == pytest.approx(1 / 3)
    w.zero_()  # callers may scribble on their copy without corrupting the topology
    assert t.mixing_matrix().sum().item() == pytest.approx(3.0)


def test_single_node_everywhere() -> None:
    for kind in GENERATORS:
        t = generate(kind, 1)
        assert t.mixing_matrix().tolist() == [[1.0]]
        assert (t.spectral_gap(), t.diameter(), t.degree_range(), t.neighbours(0)) == (1.0, 0, (0, 0), ())
    assert parse_topology({"nodes": [{"id": 5}], "weights": "uniform"}).weight(5, 5) == 1.0


def test_unknown_node_lookups() -> None:
    t = generate("ring", 4)
    for call in (lambda: t.index_of(9), lambda: t.neighbours(9), lambda: t.weight(0, 9), lambda: t.degree(9)):
        with pytest.raises(TopologyError, match="node 9 is not in topology 'ring-4'"):
            call()


# -- explicit weights --------------------------------------------------------------------------------------


def explicit_ring4(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "weights": "explicit",
        "nodes": [{"id": i} for i in range(4)],
        "edges": [[0, 1], [1, 2], [2, 3], [0, 3]],
        "explicit_weights": [[0, 1, 0.25], [1, 2, 0.25], [2, 3, 0.25], [3, 0, 0.25]],
    }
    data.update(over)
    return data


def test_explicit_weights_derive_self_weights_and_round_trip() -> None:
    t = parse_topology(explicit_ring4())
    assert t.weight(0, 3) == 0.25 and t.weight(2, 2) == 0.5
    assert (0, 0, 0.5) in t.explicit and (0, 3, 0.25) in t.explicit
    assert parse_topology(tomllib.loads(topology_to_toml(t))) == t
    both_ways = explicit_ring4(
        explicit_weights=[*explicit_ring4()["explicit_weights"], [1, 0, 0.25], [2, 2, 0.5]]
    )
    assert parse_topology(both_ways) == t


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([[0, 1, 0.25], [1, 2, 0.25], [2, 3, 0.25]], "edge [0, 3] has no explicit weight"),
        (
            [[0, 1, 0.25], [1, 0, 0.3], [1, 2, 0.25], [2, 3, 0.25], [0, 3, 0.25]],
            "not symmetric: W[0][1] = 0.25",
        ),
        (
            [[0, 1, -0.1], [1, 2, 0.25], [2, 3, 0.25], [0, 3, 0.25]],
            "explicit weight [0, 1, -0.1] is negative",
        ),
        ([[0, 1, 0.7], [1, 2, 0.7], [2, 3, 0.25], [0, 3, 0.25]], "edge weights of node 1 sum to 1.4 > 1"),
        ([[0, 1, 0.25], [1, 2, 0.25], [2, 3, 0.25], [0, 3, 0.25], [0, 0, 0.6]], "row of node 0 sums to 1.1"),
        ([[0, 1, 0.25], [0, 2, 0.25]], "[0, 2], which is not an edge"),
        ([[0, 1, 0.25], [0, 1, 0.25]], "explicit weight for [0, 1] is given twice"),
        ([[0, 1]], "each entry must be [a, b, weight]"),
        ([[0, 1, "x"]], "each entry must be [a, b, weight]"),
        ([[0, 7, 0.1]], "names unknown node 7"),
    ],
)
def test_explicit_weight_defects(weights: list[list[Any]], message: str) -> None:
    with pytest.raises(TopologyError) as info:
        parse_topology(explicit_ring4(explicit_weights=weights), "ring4.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("ring4.toml: key 'explicit_weights': ")


def test_explicit_table_requires_explicit_rule() -> None:
    with pytest.raises(TopologyError, match='set weights = "explicit"'):
        parse_topology(explicit_ring4(weights="uniform"))


# -- validation --------------------------------------------------------------------------------------------


def ring3(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "r",
        "nodes": [{"id": 0}, {"id": 1}, {"id": 2}],
        "edges": [[0, 1], [1, 2], [0, 2]],
    }
    data.update(over)
    return data


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"edges": [[0, 1], [1, 2], [3, 9]]}, "edge [3, 9] names unknown node 3"),
        ({"edges": [[0, 1], [1, 2], [2, 9]]}, "edge [2, 9] names unknown node 9"),
        ({"edges": [[0, 1], [1, 1], [1, 2]]}, "edge [1, 1] is a self-loop"),
        ({"edges": [[0, 1], [1, 2], [1, 0]]}, "edge [1, 0] duplicates edge [0, 1]"),
        ({"edges": [[0, 1], [0, 1], [1, 2]]}, "edge [0, 1] duplicates edge [0, 1]"),
        ({"edges": [[0, 1]]}, "graph is disconnected: node 2 cannot be reached from node 0"),
        ({"edges": [[0, "1"]]}, "each edge must be a pair of node ids like [0, 1], got [0, '1']"),
        ({"edges": "0-1"}, "edges must be a list of [a, b] pairs"),
        ({"nodes": [{"id": 0}, {"id": 1}, {"id": 1}]}, "duplicate node id 1"),
        ({"nodes": []}, "no nodes"),
        (
            {"nodes": [{"id": 0}, {"id": -1}, {"id": 2}]},
            "key 'nodes[1].id': node id must be a non-negative integer",
        ),
        ({"nodes": [{"id": 0}, {"id": True}, {"id": 2}]}, "non-negative integer, got True"),
        (
            {"nodes": [{"id": 0}, {"endpoint": "tcp://a:1"}, {"id": 2}]},
            "key 'nodes[1]': missing required key 'id'",
        ),
        (
            {"nodes": [{"id": 0}, {"id": 1, "endpont": "x"}, {"id": 2}]},
            "unknown per-node key 'endpont'; did you mean",
        ),
        (
            {"nodes": [{"id": 0}, {"id": 1, "endpoint": "10.0.0.1"}, {"id": 2}]},
            "endpoint must be a string like",
        ),
        (
            {"nodes": [{"id": 0}, {"id": 1, "public_key": "abc"}, {"id": 2}]},
            "must be 40 z85 characters, got 3",
        ),
        ({"nodes": [{"id": 0}, {"id": 1, "public_key": "~" * 40}, {"id": 2}]}, "characters outside z85: '~'"),
        ({"nodes": [0, 1]}, "must be a table like { id = 0 }"),
        ({"egdes": []}, "unknown top-level key 'egdes'; did you mean 'edges'? allowed keys: name, weights"),
        ({"weights": "mh"}, "weights must be one of 'metropolis-hastings', 'uniform', 'explicit', got 'mh'"),
        ({"name": 3}, "name must be a string"),
    ],
)
def test_validation_defects(over: dict[str, Any], message: str) -> None:
    with pytest.raises(TopologyError) as info:
        parse_topology(ring3(**over), "topo.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("topo.toml")
    assert isinstance(info.value, ConfigError)


def test_disconnected_message_lists_components() -> None:
    data = {"nodes": [{"id": i} for i in range(6)], "edges": [[0, 1], [1, 2], [4, 5]]}
    with pytest.raises(TopologyError, match=r"3 components: \[0, 1, 2\]; \[3\]; \[4, 5\]"):
        parse_topology(data)


# -- files, keys, fingerprints -----------------------------------------------------------------------------


def test_save_load_round_trip_with_endpoints_and_keys(tmp_path: Path) -> None:
    t = generate("hypercube", 4).with_keys({0: KEY, 3: KEY3})  # two nodes never share a key
    nodes = tuple(NodeSpec(s.id, f"tcp://127.0.0.1:{5550 + s.id}", s.public_key) for s in t.nodes)
    t = Topology(nodes=nodes, edges=t.edges, name='cube "4"\\\n\x7f')
    path = tmp_path / "t.toml"
    save_topology(t, path)
    assert load_topology(path) == t
    assert load_topology(str(path)).nodes[3].public_key == KEY3
    assert [p.name for p in tmp_path.iterdir()] == ["t.toml"]  # no temp file left behind


def test_to_toml_puts_edges_before_node_tables() -> None:
    text = topology_to_toml(generate("ring", 3))
    assert text.index("edges = [") < text.index("[[nodes]]")
    assert 'name = "ring-3"' in text and 'weights = "metropolis-hastings"' in text


def test_with_keys_rejects_unknown_nodes_and_bad_keys() -> None:
    t = generate("ring", 3)
    with pytest.raises(TopologyError, match="node 5 is not in topology"):
        t.with_keys({5: KEY})
    with pytest.raises(TopologyError, match="40 z85 characters"):
        t.with_keys({1: "short"})


def test_fingerprint_stable_and_sensitive() -> None:
    t = generate("ring", 8)
    assert t.fingerprint() == generate("ring", 8).fingerprint()
    assert len(t.fingerprint()) == 64
    assert t.with_keys({0: KEY}).fingerprint() == t.fingerprint()  # keys and endpoints do not change W
    moved = Topology(nodes=t.nodes, edges=(*t.edges[:-1], (0, 4)), name=t.name)
    assert moved.fingerprint() != t.fingerprint()
    assert generate("ring", 8, weights="uniform").fingerprint() != t.fingerprint()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        (b"nodes = [", "invalid TOML"),
        (b"\xff\xfe", "invalid TOML"),
    ],
)
def test_load_errors_name_the_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "bad.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_save_to_missing_directory_is_a_topology_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot write file"):
        save_topology(generate("ring", 3), tmp_path / "missing" / "t.toml")


def test_public_key_file_is_read_relative_to_the_topology_file(tmp_path: Path) -> None:
    keys = ensure_keypairs(tmp_path / "cluster" / "keys", ["node0", "node1"])
    path = tmp_path / "cluster" / "topology.toml"
    path.write_text('edges = [[0, 1], [1, 2]]\n[[nodes]]\nid = 0\npublic_key_file = "keys/node0.key"\n'
                    f'[[nodes]]\nid = 1\npublic_key_file = "{tmp_path}/cluster/keys/node1.key"\n'
                    f'[[nodes]]\nid = 2\npublic_key = "{KEY}"\n')
    topo = load_topology(path)
    assert [s.public_key for s in topo.nodes] == [keys["node0"].decode(), keys["node1"].decode(), KEY]
    assert parse_topology(tomllib.loads(topology_to_toml(topo))) == topo  # saved inline, loaded back the same
    assert all(s.public_key is None for s in topo.without_keys().nodes)
    assert topo.without_keys().fingerprint() == topo.fingerprint()
    (tmp_path / "cluster" / "keys" / "node0.key").unlink()
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert str(info.value) == (f"{path}: key 'nodes[0].public_key_file': {tmp_path}/cluster/keys/node0.key: public "
                               f"key file not found; run `peernet keygen --cluster {tmp_path}/cluster` to create the "
                               "cluster's keys")
    without = load_topology(path, key_files=False)  # the graph alone, before any key exists
    assert [s.public_key for s in without.nodes] == [None, None, KEY]


@pytest.mark.parametrize(("node", "message"), [
    ({"id": 1, "public_key": KEY, "public_key_file": "k.key"}, "give public_key or public_key_file, not both"),
    ({"id": 1, "public_key_file": 3}, "public_key_file must be a path, got 3"),
    ({"id": 1, "public_key_file": "garbage.key"}, "not a ZeroMQ CURVE certificate"),
])
def test_public_key_file_defects(tmp_path: Path, node: dict[str, Any], message: str) -> None:
    (tmp_path / "garbage.key").write_text("hello\n")
    data = ring3(nodes=[{"id": 0}, node, {"id": 2}])
    with pytest.raises(TopologyError, match=message) as info:
        parse_topology(data, "topo.toml", base_dir=tmp_path)
    assert info.value.key == "nodes[1].public_key_file"
