"""Hostile topology files, key files, output paths and arguments: each refused with its message, quickly."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from zmq.utils import z85

from peernet.atomic import read_bounded, write_atomic
from peernet.cli.keygen_cmd import keygen
from peernet.cli.topology_cmd import topology_group
from peernet.core.topology import generate
from peernet.errors import ConfigError, TopologyError
from peernet.security.keys import create_keypairs, load_public_key
from peernet.topology_files import MAX_TOPOLOGY_BYTES, load_topology, save_topology

KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # a valid CURVE public key
ZERO_KEY = "0" * 40  # z85 of 32 zero bytes: a small-order point
RING2 = "edges = [[0, 1]]\n[[nodes]]\nid = 0\n[[nodes]]\nid = 1\n"


def nodes(*lines: str) -> str:
    """``[[nodes]]`` tables, one per line of extra keys (``id`` is the position)."""
    return "".join(f"\n[[nodes]]\nid = {i}\n{extra}\n" for i, extra in enumerate(lines))


def explicit(edges: str, weights: str, n: int) -> str:
    return f'weights = "explicit"\nedges = {edges}\nexplicit_weights = {weights}\n' + nodes(*[""] * n)


def refused(path: Path, key: str | None, reason: str, **kwargs: bool) -> str:
    """Load ``path``, expect a TopologyError naming it, ``key`` and ``reason`` in one bounded, printable line."""
    start = time.monotonic()
    with pytest.raises(TopologyError) as info:
        load_topology(path, **kwargs)
    assert time.monotonic() - start < 5, "refusing a hostile file must not take long"
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    if key is not None:
        assert f"key '{key}': " in message, message
    assert reason in message, message
    assert message.isprintable() and len(message) < 2000, message  # quoted user text is escaped and bounded
    return message


# -- file contents: one case each ---------------------------------------------------------------------------------

CONTENT_CASES: list[tuple[str, bytes | str, str | None, str]] = [
    # (id, file content, key, reason)
    ("nested-arrays", "edges = " + "[" * 100_000 + "]" * 100_000 + "\n" + RING2, None,
     "invalid TOML: arrays or inline tables nested too deeply"),
    ("nested-inline-tables", "name = " + "{a = " * 5_000 + "1" + "}" * 5_000 + "\n" + RING2, None,
     "nested too deeply"),
    ("dotted-key-40000-parts", "a" + ".a" * 40_000 + " = 1\n" + RING2, None,
     "invalid TOML: a dotted key of more than 16 parts at line 1"),
    ("dotted-table-header", RING2 + "[x" + '."y"' * 20 + "]\n", None, "dotted key of more than 16 parts at line 6"),
    ("integer-of-5000-digits", "name = " + "9" * 5000 + "\n" + RING2, None, "invalid TOML: a value cannot be read"),
    ("not-utf8", b"name = '\xff'\n" + RING2.encode(), None, "invalid TOML: the file is not UTF-8 text (byte 8)"),
    ("byte-order-mark", b"\xef\xbb\xbf" + RING2.encode(), None, "the file starts with a byte-order mark (BOM)"),
    ("nul-byte", b"name = 'a\x00'\n" + RING2.encode(), None, r"invalid TOML: Found invalid character '\x00'"),
    ("raw-ansi-escape", b"name = '\x1b[2J'\n" + RING2.encode(), None, r"Found invalid character '\x1b'"),
    ("id-above-wire", "[[nodes]]\nid = 2147483648\n", "nodes[0].id",
     "node id 2147483648 is too large: the wire carries ids up to 2147483647"),
    ("id-ten-digits", "[[nodes]]\nid = 9999999999\n", "nodes[0].id", "too large"),
    ("id-negative", "[[nodes]]\nid = -1\n", "nodes[0].id", "node id must be a non-negative integer, got -1"),
    ("id-bool", "[[nodes]]\nid = true\n", "nodes[0].id", "non-negative integer, got True"),
    ("id-float", "[[nodes]]\nid = 1.0\n", "nodes[0].id", "non-negative integer, got 1.0"),
    ("id-huge-string", f'[[nodes]]\nid = "{"x" * 100_000}"\n', "nodes[0].id", "... (100000 characters)"),
    ("duplicate-id", nodes("", "").replace("id = 1", "id = 0"), "nodes", "duplicate node id 0"),
    ("edge-huge-int", "edges = [[0, 99999999999999999999999]]\n" + nodes("", ""), "edges",
     "names unknown node 99999999999999999999999"),
    ("edge-of-strings", 'edges = [["' + "\\u001b" * 500 + '", 1]]\n' + nodes("", ""), "edges",
     r"got ['\x1b\x1b\x1b"),
    ("key-does-not-decode", "edges = [[0, 1]]\n" + nodes(f'public_key = "{"%" * 40}"', ""), "nodes[0].public_key",
     "public_key does not decode: characters 1-5 ('%%%%%') exceed 2**32 - 1"),
    ("key-last-group-overflows", "edges = [[0, 1]]\n" + nodes(f'public_key = "{KEY[:35]}#####"', ""),
     "nodes[0].public_key", "characters 36-40"),
    ("key-all-zeros", "edges = [[0, 1]]\n" + nodes(f'public_key = "{ZERO_KEY}"', ""), "nodes[0].public_key",
     "is a small-order Curve25519 point"),
    ("key-39-characters", "edges = [[0, 1]]\n" + nodes(f'public_key = "{KEY[:39]}"', ""), "nodes[0].public_key",
     "public_key must be 40 z85 characters, got 39 characters"),
    ("key-not-a-string", "edges = [[0, 1]]\n" + nodes("public_key = [1, 2]", ""), "nodes[0].public_key",
     "must be 40 z85 characters, got [1, 2]"),
    ("two-nodes-one-key", "edges = [[0, 1]]\n" + nodes(f'public_key = "{KEY}"', f'public_key = "{KEY}"'), "nodes",
     "nodes 0 and 1 have the same public_key: each node needs its own key pair"),
    ("two-nodes-one-endpoint", "edges = [[0, 1]]\n" + nodes('endpoint = "tcp://h:5"', 'endpoint = "tcp://h:5"'),
     "nodes", "nodes 0 and 1 have the same endpoint 'tcp://h:5'"),
    ("weight-nan", explicit("[[0, 1]]", "[[0, 1, nan]]", 2), "explicit_weights",
     "each entry must be [a, b, weight] with a finite weight, got [0, 1, nan]"),
    ("weight-inf", explicit("[[0, 1]]", "[[0, 1, -inf]]", 2), "explicit_weights", "got [0, 1, -inf]"),
    ("weight-negative", explicit("[[0, 1]]", "[[0, 1, -0.5]]", 2), "explicit_weights", "is negative"),
    ("weight-huge-int", explicit("[[0, 1]]", f"[[0, 1, {'9' * 400}]]", 2), "explicit_weights",
     "finite weight, got [0, 1, <an integer of 1329 bits>]"),
    ("weight-huge-float", explicit("[[0, 1]]", "[[0, 1, 1e308]]", 2), "explicit_weights",
     "edge weights of node 0 sum to 1e+308 > 1"),
    ("bipartite-zero-self-weights",
     explicit("[[0, 1], [1, 2], [2, 3], [0, 3]]", "[[0, 1, 0.5], [1, 2, 0.5], [2, 3, 0.5], [0, 3, 0.5]]", 4),
     "explicit_weights", "W has no spectral gap: every self weight is 0 and the positive-weight graph is bipartite"),
    ("bipartite-rounding-self-weights",  # 0.1 + 0.2 + 0.7 leaves 1.1e-16, which is 0 meant
     explicit("[[0, 3], [0, 4], [0, 5], [1, 3], [1, 4], [1, 5], [2, 3], [2, 4], [2, 5]]",
              "[[0, 3, 0.1], [0, 4, 0.2], [0, 5, 0.7], [1, 3, 0.2], [1, 4, 0.7], [1, 5, 0.1], [2, 3, 0.7], "
              "[2, 4, 0.1], [2, 5, 0.2]]", 6),
     "explicit_weights", "eigenvalue -1"),
    ("zero-weights-cut-the-graph",
     explicit("[[0, 1], [1, 2], [2, 3], [0, 3]]", "[[0, 1, 0.0], [1, 2, 0.5], [2, 3, 0.0], [0, 3, 0.5]]", 4),
     "explicit_weights", "W has no spectral gap: over the edges of positive weight node 1 cannot be reached from "
     "node 0 (2 edge(s) have weight 0)"),
    ("identity-matrix", explicit("[[0, 1]]", "[[0, 1, 0], [0, 0, 1], [1, 1, 1]]", 2), "explicit_weights",
     "cannot be reached"),
    ("unknown-key-a-megabyte-long", "x" * 1_000_000 + " = 1\n" + RING2, "x" * 240 + "... (1000000 characters)",
     "unknown top-level key 'xxxx"),
    ("unknown-key-with-ansi-escape", '"\\u001b[31mred" = 1\n' + RING2, r"\x1b[31mred",
     r"unknown top-level key '\x1b[31mred'"),
    ("unknown-node-key-with-newline", "edges = [[0, 1]]\n" + nodes('"a\\nb" = 1', ""), r"nodes[0].a\nb",
     r"unknown per-node key 'a\nb'"),
    ("nodes-a-huge-string", f'nodes = "{"n" * 200_000}"\n', "nodes", "... (200000 characters)"),
    ("name-not-a-string", "name = 1979-05-27T07:32:00Z\n" + RING2, "name", "name must be a string, got datetime"),
]


@pytest.mark.parametrize(("content", "key", "reason"), [pytest.param(*c[1:], id=c[0]) for c in CONTENT_CASES])
def test_hostile_file_is_refused_with_its_message(tmp_path: Path, content: bytes | str, key: str | None,
                                                 reason: str) -> None:
    path = tmp_path / "topology.toml"
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    refused(path, key, reason)


ENDPOINTS = [
    ("tcp://h", "has no port: expected tcp://HOST:PORT"),
    ("tcp://h:", "has no port"),
    ("tcp://h:0", "port '0' is not a number in 1-65535"),
    ("tcp://h:65536", "port '65536' is not a number in 1-65535"),
    ("tcp://h:0x50", "port '0x50' is not a number"),
    ("tcp://h:*", "port '*' is not a number"),
    ("tcp://h:٣", "port '٣' is not a number"),  # a digit to str.isdigit, not to an address
    ("tcp://:5555", "has no host"),
    ("tcp://*:5555", "'*' is a wildcard (every interface), not an address a neighbour can dial"),
    ("tcp://0.0.0.0:5555", "'0.0.0.0' is a wildcard"),
    ("tcp://[::]:5555", "[::] is a wildcard"),
    ("tcp://[zz::1]:5555", "'[zz::1]' is not an IPv6 address"),
    ("tcp://300.1.1.1:5555", "'300.1.1.1' is not an IPv4 address"),
    ("tcp://a_b:5555", "host 'a_b' is not a host name"),
    ("tcp://eth0;10.0.0.1:5555", "is not a host name"),
    ("tcp://h :5555", "contains whitespace or a control character"),
    ("tcp://h:5555\u0007", "contains whitespace or a control character"),
    ("TCP://h:5555", "transport 'TCP' is not supported: use tcp:// or ipc://"),
    ("udp://h:5555", "transport 'udp' is not supported"),
    ("pgm://eth0;239.192.1.1:5555", "transport 'pgm' is not supported"),
    ("inproc://n3", "transport 'inproc' is not supported"),
    ("10.0.0.1:5555", "has no '<transport>://'"),
    ("ipc://", "needs a socket path after ipc://"),
    ("ipc://*", "needs a socket path"),
    ("ipc:///" + "p" * 107, "ipc path is 108 bytes, more than 107"),
    ("tcp://" + "h" * 300 + ":1", "is 308 characters long, more than 256"),
]


@pytest.mark.parametrize(("endpoint", "reason"), ENDPOINTS)
def test_endpoint_a_daemon_cannot_bind_or_dial_is_refused(tmp_path: Path, endpoint: str, reason: str) -> None:
    path = tmp_path / "t.toml"
    escaped = endpoint.replace("\u0007", "\\u0007")
    path.write_text("edges = [[0, 1]]\n" + nodes(f'endpoint = "{escaped}"', ""))
    message = refused(path, "nodes[0].endpoint", reason)
    assert "endpoint must be a string like 'tcp://10.0.0.3:5555' or 'ipc:///run/node3', got " in message


def test_the_limits_themselves_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("edges = [[0, 2147483647], [2147483647, 1]]\n" + "".join(
        f"[[nodes]]\nid = {i}\nendpoint = \"{ep}\"\n" for i, ep in
        [(0, "tcp://[::1]:65535"), (1, "ipc:///" + "p" * 106), (2147483647, "tcp://node-3.example.org:1")]))
    topo = load_topology(path)
    assert topo.ids == (0, 1, 2147483647) and topo.spectral_gap() > 0


# -- special files in place of the topology -----------------------------------------------------------------------


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def _loop(tmp_path: Path) -> Path:
    path = tmp_path / "loop"
    path.symlink_to(path)
    return path


def _too_large(tmp_path: Path) -> Path:
    path = tmp_path / "huge.toml"
    with open(path, "wb") as fh:
        fh.truncate(MAX_TOPOLOGY_BYTES + 1)  # sparse: no disk used, and it is never read
    return path


SPECIAL_PATHS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("directory", lambda tmp: tmp, "cannot read file: it is a directory, not a regular file"),
    ("fifo", _fifo, "cannot read file: it is a FIFO (named pipe), not a regular file"),
    ("dev-zero", lambda tmp: Path("/dev/zero"), "cannot read file: it is a character device, not a regular file"),
    ("symlink-loop", _loop, "cannot read file: Too many levels of symbolic links"),
    ("over-64-MiB", _too_large, "cannot read file: it is 67,108,865 bytes, more than the limit of 67,108,864"),
    ("missing", lambda tmp: tmp / "nope.toml", "file not found"),
    ("nul-in-path", lambda tmp: tmp / "a\x00b.toml", "cannot read file: the path contains a NUL character"),
    ("name-too-long", lambda tmp: tmp / ("n" * 300), "cannot read file: File name too long"),
]


@pytest.mark.timeout(30)  # a FIFO that is opened for reading blocks until a writer comes: it must not be
@pytest.mark.parametrize(("make", "reason"), [pytest.param(*c[1:], id=c[0]) for c in SPECIAL_PATHS])
def test_a_topology_path_that_is_not_a_regular_file_is_refused(tmp_path: Path, make: Callable[[Path], Path],
                                                                reason: str) -> None:
    path = make(tmp_path)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert reason in str(info.value) and str(info.value).isprintable()


def test_dev_stdin_is_not_read_when_it_is_not_a_regular_file() -> None:
    if stat.S_ISREG(os.stat("/dev/stdin").st_mode):
        pytest.skip("stdin is a regular file here")
    with pytest.raises(TopologyError, match="not a regular file"):
        load_topology("/dev/stdin")


def test_a_file_read_is_bounded_even_when_it_is_larger_than_it_says(tmp_path: Path) -> None:
    # /proc files report size 0 and then produce bytes: the bound holds on what is read, not on st_size alone.
    with pytest.raises(OSError, match="grew past the limit of 10 bytes"):
        read_bounded("/proc/self/status", 10)
    assert read_bounded("/proc/self/status", 1 << 20).startswith(b"Name:")


# -- public key files --------------------------------------------------------------------------------------------


def _key_file(text: str) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        (tmp / "k.key").write_text(text)
        return "k.key"
    return make


def _fifo_name(tmp: Path) -> str:
    _fifo(tmp)
    return "fifo"


def _big_key(tmp: Path) -> str:
    (tmp / "big.key").write_bytes(b"#" * (64 * 1024 + 1))
    return "big.key"


KEY_FILES: list[tuple[str, Callable[[Path], str], str]] = [
    ("fifo", _fifo_name, "cannot read public key file: it is a FIFO (named pipe), not a regular file"),
    ("dev-zero", lambda tmp: "/dev/zero", "it is a character device, not a regular file"),
    ("directory", lambda tmp: ".", "it is a directory, not a regular file"),
    ("symlink-loop", lambda tmp: _loop(tmp).name, "cannot read public key file: Too many levels of symbolic links"),
    ("over-64-KiB", _big_key, "it is 65,537 bytes, more than the limit of 65,536"),
    ("nul-in-name", lambda tmp: "a\\u0000b", r"a\x00b: cannot read public key file: the path contains a NUL"),
    ("does-not-decode", _key_file(f'metadata\ncurve\n    public-key = "{"%" * 40}"\n'),
     "public key file holds a malformed public key: it does not decode: characters 1-5"),
    ("small-order", _key_file(f'curve\n    public-key = "{ZERO_KEY}"\n'), "it is a small-order Curve25519 point"),
    ("no-public-key", _key_file("curve\n    public-key\n"), "is not a ZeroMQ CURVE certificate (no public-key line)"),
    ("missing-with-odd-name", lambda tmp: "no\\u001bkey.key", r"no\x1bkey.key: public key file not found; its name "
     "is not one `peernet keygen` can create"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("make", "reason"), [pytest.param(*c[1:], id=c[0]) for c in KEY_FILES])
def test_a_hostile_public_key_file_is_refused(tmp_path: Path, make: Callable[[Path], str], reason: str) -> None:
    name = make(tmp_path)
    path = tmp_path / "t.toml"
    path.write_text("edges = [[0, 1]]\n" + nodes(f'public_key_file = "{name}"', ""))
    refused(path, "nodes[0].public_key_file", reason)
    assert load_topology(path, key_files=False).n == 2  # the graph alone is still readable


def test_a_key_file_named_by_a_thousand_nodes_is_read_once_and_the_shared_key_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    create_keypairs(tmp_path, ["shared"])
    reads: list[Path] = []
    import peernet.topology_files as tf

    def counting(path: Path) -> bytes:
        reads.append(path)
        return load_public_key(path)

    monkeypatch.setattr(tf, "load_public_key", counting)
    path = tmp_path / "t.toml"
    path.write_text("edges = [" + ", ".join(f"[0, {i}]" for i in range(1, 1000)) + "]\n"
                    + nodes(*['public_key_file = "shared.key"'] * 1000))
    refused(path, "nodes", "nodes 0 and 1 have the same public_key")
    assert len(reads) == 1


def test_key_loading_refuses_the_same_files_directly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="it is a FIFO"):
        load_public_key(_fifo(tmp_path))
    with pytest.raises(ConfigError, match="the path contains a NUL character"):
        create_keypairs(tmp_path / "a\x00b", ["n"])
    secret = tmp_path / "s.key_secret"
    secret.write_text(f'curve\n    public-key = "{KEY}"\n    secret-key = "{"%" * 40}"\n')
    secret.chmod(0o600)
    from peernet.security.keys import load_secret_key
    with pytest.raises(ConfigError, match="holds a malformed secret key"):
        load_secret_key(secret)


# -- output paths: never replace what is not a regular file -------------------------------------------------------


def _symlink_to_file(tmp: Path) -> Path:
    (tmp / "precious").write_text("precious\n")
    (tmp / "out.toml").symlink_to(tmp / "precious")
    return tmp / "out.toml"


def _dangling(tmp: Path) -> Path:
    (tmp / "out.toml").symlink_to(tmp / "nowhere")
    return tmp / "out.toml"


def _chardev(tmp: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("mknod of a device needs root")
    os.mknod(tmp / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own: safe to fail on
    return tmp / "null"


def _subdir(tmp: Path) -> Path:
    (tmp / "sub").mkdir()
    return tmp / "sub"


def _under_a_file(tmp: Path) -> Path:
    (tmp / "plain").write_text("x")
    return tmp / "plain" / "t.toml"


OUTPUTS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("symlink-to-a-file", _symlink_to_file, "it is a symbolic link, not a regular file: refusing to replace it"),
    ("dangling-symlink", _dangling, "it is a symbolic link, not a regular file"),
    ("fifo", _fifo, "it is a FIFO (named pipe), not a regular file: refusing to replace it"),
    ("character-device", _chardev, "it is a character device, not a regular file: refusing to replace it"),
    ("directory", _subdir, "it is a directory, not a regular file"),
    ("missing-directory", lambda tmp: tmp / "missing" / "t.toml", "directory {tmp}/missing does not exist"),
    ("under-a-file", _under_a_file, "{tmp}/plain is not a directory"),
]


def _kinds(root: Path) -> dict[str, str]:
    """Every entry under ``root`` with its kind and, for a regular file, its content."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p)] = p.read_text() if stat.S_ISREG(st.st_mode) else oct(stat.S_IFMT(st.st_mode))
    return out


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("make", "reason"), [pytest.param(*c[1:], id=c[0]) for c in OUTPUTS])
def test_generate_never_replaces_what_is_not_a_regular_file(tmp_path: Path, make: Callable[[Path], Path],
                                                            reason: str) -> None:
    target = make(tmp_path)
    before = _kinds(tmp_path)
    with pytest.raises(TopologyError) as info:
        save_topology(generate("ring", 4), target)
    assert f"cannot write file: {reason.format(tmp=tmp_path)}" in str(info.value)
    assert _kinds(tmp_path) == before  # nothing replaced, no temporary file left
    if target.name != "sub":  # the command line says the same (a directory is click's to refuse)
        result = CliRunner().invoke(topology_group, ["generate", "ring", "-n", "4", "-o", str(target)])
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
        assert reason.format(tmp=tmp_path) in result.output
        assert _kinds(tmp_path) == before


def test_key_files_are_not_written_over_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("keep\n")
    (tmp_path / "n.key_secret").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "n.key").write_text("old\n")
    with pytest.raises(ConfigError, match="it is a symbolic link, not a regular file: refusing to replace it"):
        create_keypairs(tmp_path, ["n"], force=True)
    assert (tmp_path / "elsewhere").read_text() == "keep\n" and (tmp_path / "n.key_secret").is_symlink()


def test_write_atomic_replaces_regular_files_only(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a", b"1")
    write_atomic(tmp_path / "a", b"2")  # a regular file is still replaced
    assert (tmp_path / "a").read_bytes() == b"2"
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OSError, match="symbolic link"):
        write_atomic(tmp_path / "b", b"3")
    assert (tmp_path / "a").read_bytes() == b"2" and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_save_never_writes_a_file_the_loader_would_refuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import peernet.topology_files as tf

    monkeypatch.setattr(tf, "MAX_TOPOLOGY_BYTES", 100)
    with pytest.raises(TopologyError, match="more than a topology file may be \\(100\\): it could not be loaded back"):
        save_topology(generate("ring", 8), tmp_path / "t.toml")
    assert not (tmp_path / "t.toml").exists()


# -- command-line arguments ---------------------------------------------------------------------------------------


def _generate(tmp_path: Path, *args: str) -> Result:
    return CliRunner().invoke(topology_group, ["generate", *args, "-o", str(tmp_path / "t.toml")])


ARGUMENTS = [
    (["ring", "--nodes", "0"], "'--nodes' / '-n': 0 is not in the range 1<=x<=1000000"),
    (["ring", "--nodes", "-1"], "not in the range"),
    (["ring", "--nodes", str(10**30)], "not in the range"),
    (["ring", "--nodes", "1000001"], "not in the range"),
    (["ring", "--nodes", "abc"], "'abc' is not a valid integer"),
    (["ring", "--nodes", "1e3"], "is not a valid integer"),
    (["complete", "--nodes", "3000"], "--nodes 3000: a complete graph of 3,000 nodes has about 4,498,500 edges, "
                                      "more than the 2,000,000 a generated topology may have"),
    (["hypercube", "--nodes", "524288"], "about 4,980,736 edges"),
    (["random", "--nodes", "8", "--seed", "-1"], "'--seed': -1 is not in the range 0<=x<=18446744073709551615"),
    (["random", "--nodes", "8", "--seed", str(2**64)], "not in the range"),
    (["random", "--nodes", "8", "--seed", "x"], "'x' is not a valid integer"),
    (["mesh", "--nodes", "4"], "'mesh' is not one of"),
    (["ring", "--nodes", "4", "--weights", "explicit"], "'explicit' is not one of"),
]


@pytest.mark.parametrize(("args", "reason"), ARGUMENTS)
def test_bad_generate_arguments_exit_2_without_traceback(tmp_path: Path, args: list[str], reason: str) -> None:
    start = time.monotonic()
    result = _generate(tmp_path, *args)
    assert time.monotonic() - start < 5
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert reason in result.output and "Traceback" not in result.output
    assert not (tmp_path / "t.toml").exists()


def test_empty_output_path_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(topology_group, ["generate", "ring", "-n", "4", "-o", ""])
    assert result.exit_code == 2 and "the path is empty" in result.output


def test_check_prints_a_hostile_name_escaped(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('name = "\\u001b[2J\\u001b]0;pwned\\u0007"\n' + RING2)
    result = CliRunner().invoke(topology_group, ["check", str(path)])
    assert result.exit_code == 0 and "\x1b" not in result.output
    assert r"name:         \x1b[2J\x1b]0;pwned\x07" in result.output


@pytest.mark.timeout(30)
def test_check_of_a_fifo_exits_2_at_once(tmp_path: Path) -> None:
    result = CliRunner().invoke(topology_group, ["check", str(_fifo(tmp_path))])
    assert result.exit_code == 2 and "it is a FIFO (named pipe), not a regular file" in result.output


@pytest.mark.parametrize(("name", "reason"), [
    ("\x1b[31mred", r"key name '\x1b[31mred' must be"),
    ("k" * 100_000, "... (100000 characters) must be"),
    ("../escape", "key name '../escape' must be"),
])
def test_keygen_names_are_quoted_bounded_and_escaped(tmp_path: Path, name: str, reason: str) -> None:
    result = CliRunner().invoke(keygen, [name, "--dir", str(tmp_path)])
    assert result.exit_code == 2 and reason in result.output and len(result.output) < 1000
    assert "\x1b" not in result.output and list(tmp_path.iterdir()) == []


def test_routing_ids_and_bootstrap_carry_exactly_the_topology_id_range() -> None:
    from peernet.bootstrap.protocol import _node_id
    from peernet.core.topology_limits import MAX_NODE_ID
    from peernet.errors import BadRequest, TransportError
    from peernet.transport.zmq_transport import decode_routing_id, encode_routing_id

    assert decode_routing_id(encode_routing_id(MAX_NODE_ID)) == MAX_NODE_ID == _node_id(MAX_NODE_ID)
    assert decode_routing_id(str(MAX_NODE_ID + 1).encode()) is None
    with pytest.raises(TransportError):
        encode_routing_id(MAX_NODE_ID + 1)
    with pytest.raises(BadRequest):
        _node_id(MAX_NODE_ID + 1)
    assert len(z85.decode(KEY)) == 32
