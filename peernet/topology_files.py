"""Topology TOML I/O: parse, load, atomically save, and write the TOML file form."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peernet.atomic import write_atomic
from peernet.core.topology import NodeSpec, Topology
from peernet.errors import ConfigError, TopologyError
from peernet.security.keys import load_public_key

_TOP_KEYS = ("name", "weights", "edges", "explicit_weights", "nodes")
_NODE_KEYS = ("id", "endpoint", "public_key", "public_key_file")


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
            close = difflib.get_close_matches(k, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TopologyError(
                f"unknown {where}key {k!r}; {hint}allowed keys: {', '.join(allowed)}",
                file=source,
                key=prefix + k,
            )


def _key_from_file(raw: Mapping[str, Any], base_dir: Path | None, source: str, where: str) -> str:
    """The public key a node's ``public_key_file`` names (relative to the topology file's directory)."""
    name = raw["public_key_file"]
    if "public_key" in raw:
        raise TopologyError("give public_key or public_key_file, not both", file=source, key=f"{where}.public_key_file")
    if not isinstance(name, str) or not name:
        raise TopologyError(f"public_key_file must be a path, got {name!r}", file=source,
                            key=f"{where}.public_key_file")
    path = Path(name) if base_dir is None else base_dir / name  # an absolute name stays as it is
    try:
        return load_public_key(path).decode()
    except ConfigError as exc:
        raise TopologyError(str(exc), file=source, key=f"{where}.public_key_file") from None


def parse_topology(data: Mapping[str, Any], source: str = "<topology>", *, base_dir: str | Path | None = None,
                   key_files: bool = True) -> Topology:
    """Build and validate a Topology from parsed TOML; errors name ``source``, the key and the problem.

    A node's ``public_key_file`` is read relative to ``base_dir`` (default: the working directory) into its
    ``public_key``; with ``key_files=False`` it is skipped (to read a graph whose keys do not exist yet).
    """
    base_dir = None if base_dir is None else Path(base_dir)

    if not isinstance(data, Mapping):
        raise TopologyError(f"a topology must be a table, got {type(data).__name__}", file=source)
    _reject_unknown(data, _TOP_KEYS, "top-level ", source)
    raw_nodes = data.get("nodes")
    if not raw_nodes:
        raise TopologyError("no nodes: add at least one [[nodes]] table with an id", file=source, key="nodes")
    if not isinstance(raw_nodes, list):
        raise TopologyError(f"nodes must be [[nodes]] tables, got {raw_nodes!r}", file=source, key="nodes")
    nodes: list[NodeSpec] = []
    for i, raw in enumerate(raw_nodes):
        if not isinstance(raw, Mapping):
            raise TopologyError(
                f"must be a table like {{ id = 0 }}, got {raw!r}", file=source, key=f"nodes[{i}]"
            )
        _reject_unknown(raw, _NODE_KEYS, "per-node ", source, prefix=f"nodes[{i}].")
        if "id" not in raw:
            raise TopologyError("missing required key 'id'", file=source, key=f"nodes[{i}]")
        public_key = raw.get("public_key")
        if "public_key_file" in raw and key_files:
            public_key = _key_from_file(raw, base_dir, source, f"nodes[{i}]")
        try:
            nodes.append(NodeSpec(raw["id"], raw.get("endpoint"), public_key))
        except TopologyError as exc:
            raise TopologyError(exc.reason, file=source, key=f"nodes[{i}].{exc.key}") from None
    try:
        return Topology(
            nodes=tuple(nodes),
            edges=data.get("edges", ()),
            weights=data.get("weights", "metropolis-hastings"),
            explicit=data.get("explicit_weights", ()),
            name=data.get("name", ""),
        )
    except TopologyError as exc:
        raise TopologyError(exc.reason, file=source, key=exc.key) from None


def load_topology(path: str | Path, *, key_files: bool = True) -> Topology:
    """Read and validate a topology TOML file (``key_files``: see :func:`parse_topology`)."""
    source = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise TopologyError("file not found", file=source) from None
    except OSError as exc:
        raise TopologyError(f"cannot read file: {exc.strerror or exc}", file=source) from None
    except UnicodeDecodeError:
        raise TopologyError("invalid TOML: the file is not UTF-8 text", file=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"invalid TOML: {exc}", file=source) from None
    return parse_topology(data, source, base_dir=Path(path).parent, key_files=key_files)


def save_topology(topo: Topology, path: str | Path) -> None:
    """Write ``topology_to_toml(topo)`` atomically: a reader sees the old file or the new one, never half of it."""
    try:
        write_atomic(path, topology_to_toml(topo))
    except OSError as exc:
        raise TopologyError(f"cannot write file: {exc.strerror or exc}", file=str(path)) from None
