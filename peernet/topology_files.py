"""Topology TOML I/O: parse, load (bounded, every defect a TopologyError), atomically save, the TOML file form."""

from __future__ import annotations

import difflib
import re
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from peernet.atomic import write_atomic
from peernet.core.topology import NodeSpec, Topology
from peernet.errors import ConfigError, TopologyError, quoted
from peernet.security.cluster import key_owners
from peernet.security.keys import load_public_key
from peernet.toml_files import parse_toml, read_toml_text

_TOP_KEYS = ("name", "weights", "edges", "explicit_weights", "nodes")
_NODE_KEYS = ("id", "endpoint", "public_key", "public_key_file")

#: The largest topology file load_topology reads (checked before reading): a 100,000-node random graph is
#: about 25 MB; parsing 64 MiB of the worst TOML takes the parser about 40 s and 2.5 GB.
MAX_TOPOLOGY_BYTES = 64 * 1024 * 1024
# The edges block as save_topology writes it: integers as TOML reads them (no sign, no leading zero, no "_"), at
# most 10 digits (so int64 holds them; larger ids are refused by validation anyway). Possessive: linear time.
_ID = r"(?:0|[1-9][0-9]{0,9})"
_PAIR = rf"\[[ \t]*+{_ID}[ \t]*+,[ \t]*+{_ID}[ \t]*+\]"
_GAP = r"[ \t\r\n]*+"
_EDGE_BLOCK = re.compile(rf"^edges[ \t]*+=[ \t]*+\[{_GAP}(?:{_PAIR}{_GAP},{_GAP})*+(?:{_PAIR}{_GAP})?+\]", re.M)
_NOT_DIGITS = str.maketrans(dict.fromkeys("[],\r\n\t", " "))


def _toml_str(s: str) -> str:
    """A TOML basic string; escapes what TOML forbids raw (quote, backslash, control characters)."""
    out: list[str] = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif (ch < " " and ch != "\t") or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_array(key: str, items: list[str], per_line: int) -> list[str]:
    if not items:
        return [f"{key} = []"]
    rows = [items[i : i + per_line] for i in range(0, len(items), per_line)]
    return [f"{key} = ["] + ["    " + ", ".join(row) + "," for row in rows] + ["]"]


def topology_to_toml(topo: Topology) -> str:
    """The TOML file form of ``topo`` (what ``Topology.to_toml`` returns)."""
    lines = [
        "# peernet topology (format: docs/topology.md)",
        f"name = {_toml_str(topo.name)}",
        f"weights = {_toml_str(topo.weights)}",
    ]
    lines += _toml_array("edges", [f"[{a}, {b}]" for a, b in topo.edges], per_line=8)
    if topo.weights == "explicit":
        lines += _toml_array("explicit_weights", [f"[{a}, {b}, {w!r}]" for a, b, w in topo.explicit], 4)
    for spec in topo.nodes:
        lines += ["", "[[nodes]]", f"id = {spec.id}"]
        if spec.endpoint is not None:
            lines.append(f"endpoint = {_toml_str(spec.endpoint)}")
        if spec.public_key is not None:
            lines.append(f"public_key = {_toml_str(spec.public_key)}")
    return "\n".join(lines) + "\n"


def _reject_unknown(
    table: Mapping[str, Any], allowed: tuple[str, ...], where: str, source: str, prefix: str = ""
) -> None:
    for k in table:
        if k not in allowed:
            close = difflib.get_close_matches(k, allowed, n=1) if len(k) <= 64 else []  # cheap on hostile names
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TopologyError(
                f"unknown {where}key {quoted(k)}; {hint}allowed keys: {', '.join(allowed)}",
                file=source,
                key=prefix + k,
            )


def _key_file_name(raw: Mapping[str, Any], source: str, where: str) -> str:
    name = raw["public_key_file"]
    if "public_key" in raw:
        raise TopologyError("give public_key or public_key_file, not both", file=source, key=f"{where}.public_key_file")
    if not isinstance(name, str) or not name:
        raise TopologyError(f"public_key_file must be a path, got {quoted(name)}", file=source,
                            key=f"{where}.public_key_file")
    return name


def _key_from_file(name: str, base_dir: Path | None, source: str, where: str, cache: dict[Path, str]) -> str:
    """The public key a node's ``public_key_file`` names (relative to the topology file's directory)."""
    path = Path(name) if base_dir is None else base_dir / name  # an absolute name stays as it is
    if path not in cache:  # each file is read once, however many nodes name it
        try:
            cache[path] = load_public_key(path).decode()
        except ConfigError as exc:
            raise TopologyError(str(exc), file=source, key=f"{where}.public_key_file") from None
    return cache[path]


def _node_spec(raw: object, i: int, source: str, base_dir: Path | None, key_files: dict[Path, str] | None
               ) -> NodeSpec:
    """``nodes[i]`` checked; ``key_files`` caches the key files read (None: do not read them)."""
    if not isinstance(raw, Mapping):
        raise TopologyError(f"must be a table like {{ id = 0 }}, got {quoted(raw)}", file=source, key=f"nodes[{i}]")
    _reject_unknown(raw, _NODE_KEYS, "per-node ", source, prefix=f"nodes[{i}].")
    if "id" not in raw:
        raise TopologyError("missing required key 'id'", file=source, key=f"nodes[{i}]")
    public_key = raw.get("public_key")
    if "public_key_file" in raw:
        name = _key_file_name(raw, source, f"nodes[{i}]")
        if key_files is not None:
            public_key = _key_from_file(name, base_dir, source, f"nodes[{i}]", key_files)
    try:
        return NodeSpec(raw["id"], raw.get("endpoint"), public_key)
    except TopologyError as exc:
        raise TopologyError(exc.reason, file=source, key=f"nodes[{i}].{exc.key}") from None


def _check_distinct(topo: Topology, source: str) -> None:
    """Two nodes with one key, or one static endpoint, could never both run: refuse, naming both."""
    key_owners(topo, source=source)
    listeners: dict[str, int] = {}
    for spec in topo.nodes:
        if spec.endpoint is None:
            continue
        if spec.endpoint in listeners:
            raise TopologyError(f"nodes {listeners[spec.endpoint]} and {spec.id} have the same endpoint "
                                f"{quoted(spec.endpoint)}: two nodes cannot listen on one address", file=source,
                                key="nodes")
        listeners[spec.endpoint] = spec.id


def parse_topology(data: Mapping[str, Any], source: str = "<topology>", *, base_dir: str | Path | None = None,
                   key_files: bool = True) -> Topology:
    """Build and validate a Topology from parsed TOML; errors name ``source``, the key and the problem.

    A node's ``public_key_file`` is read relative to ``base_dir`` (default: the working directory) into its
    ``public_key``; with ``key_files=False`` it is skipped (to read a graph whose keys do not exist yet).
    Beyond what Topology checks, two nodes may not share a public key or a static endpoint.
    """
    base = None if base_dir is None else Path(base_dir)
    if not isinstance(data, Mapping):
        raise TopologyError(f"a topology must be a table, got {type(data).__name__}", file=source)
    _reject_unknown(data, _TOP_KEYS, "top-level ", source)
    raw_nodes = data.get("nodes")
    if not raw_nodes:
        raise TopologyError("no nodes: add at least one [[nodes]] table with an id", file=source, key="nodes")
    if not isinstance(raw_nodes, list):
        raise TopologyError(f"nodes must be [[nodes]] tables, got {quoted(raw_nodes)}", file=source, key="nodes")
    cache: dict[Path, str] | None = {} if key_files else None
    nodes = [_node_spec(raw, i, source, base, cache) for i, raw in enumerate(raw_nodes)]
    try:
        topo = Topology(
            nodes=tuple(nodes),
            edges=data.get("edges", ()),
            weights=data.get("weights", "metropolis-hastings"),
            explicit=data.get("explicit_weights", ()),
            name=data.get("name", ""),
        )
    except TopologyError as exc:
        raise TopologyError(exc.reason, file=source, key=exc.key) from None
    _check_distinct(topo, source)
    return topo


def _read_toml(path: str | Path) -> dict[str, Any]:
    """The parsed TOML of a topology file (the checks of ``toml_files.read_toml_text``, at most
    MAX_TOPOLOGY_BYTES), its edges block read fast when it has the form ``save_topology`` writes."""
    text = read_toml_text(path, MAX_TOPOLOGY_BYTES, TopologyError)
    fast = _parse_with_edge_block(text)
    return fast if fast is not None else parse_toml(text, str(path), TopologyError)


def _parse_with_edge_block(text: str) -> dict[str, Any] | None:
    """The parsed file, with its ``edges`` array read by a strict pattern into an (m, 2) array; None if the file
    does not have the form ``save_topology`` writes (then the caller parses it all with tomllib).

    tomllib takes ~4.7 µs per edge, 8 s for a 100,000-node exponential graph; the pattern and numpy take ~1 s.
    The block must be a top-level ``edges = [[a, b], ...]`` of canonical decimal integers (what TOML reads as
    the same numbers); the rest of the file, the block replaced by a random string, goes through tomllib, and
    the array is used only if that string comes back as the top-level ``edges`` (not inside a multi-line
    string or a table). Anything else, or any error, falls back to the plain parse and its messages.
    """
    block = _EDGE_BLOCK.search(text)
    if block is None:
        return None
    token = f"peernet-edges-{secrets.token_hex(16)}"
    try:
        data = tomllib.loads(f'{text[:block.start()]}edges = "{token}"{text[block.end():]}')
    except (ValueError, RecursionError):
        return None
    if data.get("edges") != token:
        return None
    numbers = text[block.start():block.end()].partition("[")[2].translate(_NOT_DIGITS).split()
    data["edges"] = np.array(numbers, dtype=np.int64).reshape(-1, 2)
    return data


def load_topology(path: str | Path, *, key_files: bool = True) -> Topology:
    """Read and validate a topology TOML file (``key_files``: see :func:`parse_topology`)."""
    data = _read_toml(path)
    return parse_topology(data, str(path), base_dir=Path(path).parent, key_files=key_files)


def save_topology(topo: Topology, path: str | Path) -> None:
    """Write ``topology_to_toml(topo)`` atomically: a reader sees the old file or the new one, never half of it."""
    data = topology_to_toml(topo).encode()
    if len(data) > MAX_TOPOLOGY_BYTES:  # never write what load_topology would refuse
        raise TopologyError(f"the topology's TOML is {len(data):,} bytes, more than a topology file may be "
                            f"({MAX_TOPOLOGY_BYTES:,}): it could not be loaded back", file=str(path))
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise TopologyError(f"cannot write file: {exc.strerror or exc}", file=str(path)) from None
