"""Over 10,000 generated topology files and 400 `topology` argument lists: a typed error or something runnable."""

# Allowed outcomes of a load: a TopologyError, or a topology a daemon can run (ids the wire carries, keys that
# decode and differ, endpoints that parse, a W with a positive spectral gap). Never another exception, never a hang.

from __future__ import annotations

import json
import math
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zmq.utils import z85

from peernet.cli.topology_cmd import MAX_GENERATED_NODES, topology_group
from peernet.core.topology import Topology
from peernet.core.topology_limits import MAX_NODE_ID
from peernet.errors import TopologyError
from peernet.topology_files import load_topology

GOOD_KEYS = [zmq.curve_keypair()[0].decode() for _ in range(4)]
BAD_KEYS = ["%" * 40, "0" * 40, GOOD_KEYS[0][:39], GOOD_KEYS[0][:35] + "#####", "~" * 40]
ENDPOINTS = ["tcp://10.0.0.1:5550", "tcp://10.0.0.2:5550", "tcp://[::1]:7", "ipc:///tmp/n1", "tcp://h:0",
             "tcp://h:65536", "tcp://*:5", "tcp://:5", "udp://h:5", "ipc://", "ipc://" + "p" * 120, "tcp://h",
             "tcp://h:5\n", "tcp://a b:5", "tcp://0.0.0.0:1", "tcp://300.0.0.1:1"]
IDS = st.one_of(st.integers(0, 7), st.sampled_from([-1, MAX_NODE_ID, MAX_NODE_ID + 1, 10**10, 2**63, 10**30]),
                st.sampled_from([True, 1.5, "0", None, [], {}]))
WEIGHTS = st.one_of(st.sampled_from([0.0, 0.125, 0.25, 1 / 3, 0.5, 1.0, -0.25, 1e308, 10**400, math.nan, math.inf,
                                     -math.inf, 1e-12, True, "0.5"]), st.floats(0, 1))
KEY_FILES = ["good.key", "bad.key", "fifo", "dir", "missing.key", "/dev/zero", "loop"]
FILES_PER_EXAMPLE = 6  # one structured document, written as it is and with five byte-level mutations
_ENDPOINT = re.compile(r"tcp://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.%a-z0-9]+\]):([0-9]{1,5})|ipc://(.+)")


# -- what a daemon needs of an accepted topology --------------------------------------------------------------------


def assert_runnable(topo: Topology) -> None:
    """Independent of the loader's own checks: everything a daemon relies on when it starts."""
    assert topo.n >= 1
    assert all(type(i) is int and 0 <= i <= MAX_NODE_ID for i in topo.ids)
    keys = [s.public_key for s in topo.nodes if s.public_key is not None]
    assert len(set(keys)) == len(keys)
    for key in keys:  # a mutated key may be another valid one: it must decode to a point of large order
        raw = z85.decode(key)
        assert len(raw) == 32 and not small_order(int.from_bytes(raw, "little"))
    endpoints = [s.endpoint for s in topo.nodes if s.endpoint is not None]
    assert len(set(endpoints)) == len(endpoints)
    for ep in endpoints:
        match = _ENDPOINT.fullmatch(ep)
        assert match is not None and ep.isprintable() and " " not in ep, ep
        if match.group(2):
            assert 1 <= int(match.group(2)) <= 65535 and match.group(1) not in ("0.0.0.0", "[::]")
        else:
            assert 0 < len(match.group(3).encode()) <= 107
    w = np.array([[topo.weight(a, b) for b in topo.ids] for a in topo.ids])  # small n: no torch needed
    assert np.allclose(w, w.T) and np.allclose(w.sum(axis=1), 1.0, atol=1e-8) and (w >= 0).all()
    if topo.n > 1:
        moduli = np.sort(np.abs(np.linalg.eigvalsh(w)))[::-1]
        assert 1.0 - moduli[1] > 1e-12, moduli


def small_order(u: int) -> bool:
    """Whether X25519 maps ``u`` to 0 under the cofactor 8 (RFC 7748 ladder): a key no handshake survives."""
    p, x1 = 2**255 - 19, (u & (2**255 - 1)) % (2**255 - 19)
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in reversed(range(4)):  # the scalar 8 = 0b1000
        bit = (8 >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = (x2 + z2) % p, (x2 - z2) % p
        aa, bb, c, d = a * a % p, b * b % p, (x3 + z3) % p, (x3 - z3) % p
        e, da, cb = (aa - bb) % p, d * a % p, c * b % p
        x3, z3 = (da + cb) ** 2 % p, x1 * (da - cb) ** 2 % p
        x2, z2 = aa * bb % p, e * (aa + 121665 * e) % p
    if swap:
        x2, z2 = x3, z3
    return x2 * pow(z2, p - 2, p) % p == 0


def load_or_refuse(directory: Path, content: bytes) -> None:
    """Write ``content`` as a topology file in ``directory`` and load it: refused with a typed error, or runnable."""
    # A fresh name each time: truncating one file over and over is several times slower on a disk file system.
    fd, name = tempfile.mkstemp(dir=directory, suffix=".toml")
    path = Path(name)
    try:
        os.write(fd, content)
        os.close(fd)
        topo = load_topology(path)
    except TopologyError as exc:
        message = str(exc)
        assert message.isprintable() and len(message) < 4000, message
        return
    finally:
        path.unlink()
    assert_runnable(topo)


# -- structured documents ------------------------------------------------------------------------------------------


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a TOML basic string (or invalid TOML)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    return '"?"'


def to_toml(doc: dict[str, Any]) -> str:
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items() if k != "nodes"]
    nodes = doc.get("nodes")
    if isinstance(nodes, list) and all(isinstance(n, dict) for n in nodes):
        for node in nodes:
            lines += ["[[nodes]]"] + [f"{json.dumps(k)} = {toml_value(v)}" for k, v in node.items()]
    elif nodes is not None:
        lines.insert(0, f"nodes = {toml_value(nodes)}")
    return "\n".join(lines) + "\n"


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid-ish topology (ring, star or complete of a few nodes) with a few hostile mutations."""
    n = draw(st.integers(1, 6))
    ids = list(range(n))
    shape = draw(st.sampled_from(["ring", "star", "complete"]))
    pairs = {"ring": [(i, (i + 1) % n) for i in range(n)], "star": [(0, i) for i in range(1, n)],
             "complete": [(i, j) for i in range(n) for j in range(i + 1, n)]}[shape]
    edges = sorted({(min(a, b), max(a, b)) for a, b in pairs if a != b})
    doc: dict[str, Any] = {"name": draw(st.text(max_size=8)), "edges": [list(e) for e in edges],
                           "nodes": [{"id": i} for i in ids]}
    if draw(st.booleans()):  # explicit weights: a valid set (max degree rule), then maybe broken
        deg = max([len([e for e in edges if i in e]) for i in ids] + [0])
        doc["weights"] = "explicit"
        doc["explicit_weights"] = [[a, b, 1 / (deg + 1)] for a, b in edges]
    for _ in range(draw(st.integers(0, 4))):
        mutate(draw, doc, ids)
    return doc


def mutate(draw: st.DrawFn, doc: dict[str, Any], ids: list[int]) -> None:
    nodes = doc["nodes"]
    if not (isinstance(nodes, list) and nodes and all(isinstance(x, dict) for x in nodes)) or not isinstance(
            doc.get("edges"), list) or not isinstance(doc.get("explicit_weights", []), list):
        return  # an earlier mutation replaced a table or list with something else: nothing left to mutate
    node = nodes[draw(st.integers(0, len(nodes) - 1))]
    kind = draw(st.integers(0, 11))
    if kind == 0:
        node["id"] = draw(IDS)
    elif kind == 1:
        node["endpoint"] = draw(st.one_of(st.sampled_from(ENDPOINTS), st.text(max_size=12)))
    elif kind == 2:
        node["public_key"] = draw(st.sampled_from(GOOD_KEYS + BAD_KEYS))
    elif kind == 3:
        node["public_key_file"] = draw(st.sampled_from(KEY_FILES))
    elif kind == 4:
        doc["edges"].append([draw(IDS), draw(st.sampled_from(ids))])
    elif kind == 5 and doc["edges"]:
        doc["edges"].pop(draw(st.integers(0, len(doc["edges"]) - 1)))
    elif kind == 6:
        doc.setdefault("explicit_weights", []).append([draw(st.sampled_from(ids)), draw(st.sampled_from(ids)),
                                                       draw(WEIGHTS)])
        doc["weights"] = draw(st.sampled_from(["explicit", "explicit", "uniform", "mh"]))
    elif kind == 7 and doc.get("explicit_weights"):
        entry = doc["explicit_weights"][draw(st.integers(0, len(doc["explicit_weights"]) - 1))]
        if isinstance(entry, list) and len(entry) == 3:
            entry[2] = draw(WEIGHTS)
    elif kind == 8:
        (node if draw(st.booleans()) else doc)[draw(st.text(min_size=1, max_size=6))] = draw(st.integers())
    elif kind == 9:
        nodes.append(dict(node))  # a duplicate node: same id, key and endpoint
    elif kind == 10:
        doc[draw(st.sampled_from(["nodes", "edges", "explicit_weights", "weights", "name"]))] = draw(
            st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3)))
    else:
        doc["weights"] = draw(st.sampled_from(["metropolis-hastings", "uniform", "explicit", "", "x"]))


def byte_mutations(data: bytes, rng: random.Random) -> list[bytes]:
    """A few damaged copies: a byte flipped, a slice cut or doubled, random bytes or a nesting bomb inserted."""
    out = []
    for _ in range(FILES_PER_EXAMPLE - 1):
        b = bytearray(data)
        i = rng.randrange(len(b) + 1)
        op = rng.randrange(6)
        if op == 0 and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == 1:
            del b[i : i + rng.randrange(1, 20)]
        elif op == 2:
            b[i:i] = b[i : i + rng.randrange(1, 40)] * rng.randrange(1, 4)
        elif op == 3:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif op == 4:
            b[i:i] = rng.choice([b"[" * 600, b"{a=" * 400, b".a" * 30, b"\xef\xbb\xbf", b"\x00", b"9" * 4400])
        else:
            b[i:i] = rng.choice([b"\n[[nodes]]\nid = 3\n", b"\nweights = \"explicit\"\n", b"\nedges = [[0, 0]]\n"])
        out.append(bytes(b))
    return out


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the key files the documents name: a good one, bad ones and non-files."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "good.key").write_text(f'curve\n    public-key = "{GOOD_KEYS[3]}"\n')
    (root / "bad.key").write_text('curve\n    public-key = "' + "%" * 40 + '"\n')
    os.mkfifo(root / "fifo")
    (root / "dir").mkdir()
    (root / "loop").symlink_to(root / "loop")
    return root


@pytest.mark.timeout(120)
@settings(max_examples=1500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(doc=documents(), seed=st.integers(0, 2**32))
def test_structured_files_load_or_are_refused(fuzz_dir: Path, doc: dict[str, Any], seed: int) -> None:
    data = to_toml(doc).encode("utf-8", "surrogatepass")
    for content in [data, *byte_mutations(data, random.Random(seed))]:
        load_or_refuse(fuzz_dir, content)


@pytest.mark.timeout(120)
@settings(max_examples=1500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=400), st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
                      st.text(alphabet="[]{}=.,\"'#\n 01a-_:", max_size=300).map(str.encode)))
def test_random_files_are_refused_or_runnable(fuzz_dir: Path, data: bytes) -> None:
    load_or_refuse(fuzz_dir, data)


# -- the command line ----------------------------------------------------------------------------------------------

_NODES = st.one_of(st.integers(-3, 12).map(str), st.integers(MAX_GENERATED_NODES + 1, 10**40).map(str),
                   st.sampled_from(["", "1e3", "0x10", "abc", " 4", "４"]))
_SEED = st.one_of(st.integers(0, 99).map(str), st.integers(-5, 2**64 + 5).map(str), st.text(max_size=4))
_OUTPUTS = ["new.toml", "existing.toml", "dir", "fifo", "link", "missing/t.toml", "plain/t.toml", ""]
_NAMES = {"new.toml", "existing.toml", "dir", "fifo", "link", "missing/t.toml", "plain/t.toml", "keys", "missing",
          "missing.toml"}  # made absolute under the test's directory


@st.composite
def generate_args(draw: st.DrawFn) -> list[str]:
    """Arguments of ``topology generate``: about half of them valid, the rest wrong in one or a few ways."""
    kinds = ["ring", "torus", "hypercube", "exponential", "complete", "star", "random"]
    kind = draw(st.text(max_size=6)) if draw(st.integers(0, 7)) == 0 else draw(st.sampled_from(kinds))
    if kind == "complete" and draw(st.booleans()):
        nodes = str(draw(st.integers(2001, MAX_GENERATED_NODES)))  # refused for its edges, before building
    else:
        nodes = draw(st.integers(1, 12).map(str)) if draw(st.booleans()) else draw(_NODES)
    output = "new.toml" if draw(st.booleans()) else draw(st.sampled_from(_OUTPUTS))
    args = ["generate", kind, "--nodes", nodes, "-o", output]
    if draw(st.booleans()):
        args += ["--seed", draw(_SEED)]
    if draw(st.booleans()):
        args += ["--weights", draw(st.sampled_from(["metropolis-hastings", "uniform", "explicit", "mh", ""]))]
    if draw(st.integers(0, 3)) == 0:
        args += ["--keys", draw(st.sampled_from(["keys", "dir", "fifo", "missing"]))]
    if draw(st.integers(0, 4)) == 0:  # an option or argument out of place
        args.insert(draw(st.integers(0, len(args))), draw(st.sampled_from(["--nodes", "-o", "--bogus", "x", "--"])))
    return args


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "existing.toml").write_text("not a topology\n")
    (root / "dir").mkdir()
    (root / "plain").write_text("x")
    os.mkfifo(root / "fifo")
    (root / "target").write_text("precious\n")
    (root / "link").symlink_to(root / "target")
    (root / "keys").mkdir()
    return root


@pytest.mark.timeout(120)
@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=st.one_of(generate_args(), st.lists(st.sampled_from(["check", "--json", "existing.toml", "fifo", "dir",
                                                                 "link", "missing.toml", "new.toml", "/dev/zero"]),
                                                max_size=4)))
def test_topology_command_exits_0_or_2_never_a_traceback(cli_dir: Path, args: list[str]) -> None:
    # A NUL cannot reach a real command line (argv strings end at one), so none is generated.
    args = [str(cli_dir / a) if a in _NAMES else a for a in args]
    result = CliRunner().invoke(topology_group, args)
    assert result.exit_code in (0, 2), (args, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert "Traceback" not in result.output
    assert (cli_dir / "target").read_text() == "precious\n" and (cli_dir / "link").is_symlink()
    assert (cli_dir / "fifo").is_fifo() and (cli_dir / "dir").is_dir()
    if result.exit_code == 0 and args and args[0] == "generate" and args.count("-o") == 1:
        load_topology(args[args.index("-o") + 1])  # what generate writes, check loads
