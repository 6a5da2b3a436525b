"""Keys of a whole cluster directory (``peernet keygen --cluster``) and the topology's key-to-node map."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peernet.config import load_run_settings, resolve_topology
from peernet.core.topology import Topology
from peernet.errors import ConfigError, TopologyError
from peernet.security.keys import ensure_keypairs, key_paths

KEYS_DIR = "keys"
BOOTSTRAP_KEY = "bootstrap"
OPERATOR_KEY = "operator"


def node_key_name(node_id: int) -> str:
    return f"node{node_id}"


@dataclass(frozen=True)
class ClusterKeys:
    """What ``keygen_cluster`` produced: every public key by name, and which pairs are new."""

    directory: Path
    public: dict[str, bytes]
    created: list[str]
    stale: list[int]  # nodes whose inline public_key in the topology is not their key file's

    def node_keys(self) -> dict[int, str]:
        """Node id -> z85 public key, for ``Topology.with_keys``."""
        return {int(name[4:]): key.decode() for name, key in self.public.items()
                if name.startswith("node") and name[4:].isdigit()}


def cluster_topology(run_file: str | Path) -> Topology:
    """The graph of the run in ``run_file`` without reading any key file (they may not exist yet)."""
    topology: Topology = resolve_topology(load_run_settings(run_file), key_files=False)
    return topology


def keygen_cluster(directory: str | Path, *, force: bool = False) -> ClusterKeys:
    """Create DIR/keys/ with a pair per topology node (``node<id>``), ``bootstrap`` and ``operator``.

    DIR must hold ``run.toml``. Pairs that exist are kept, so running it twice changes nothing; ``force``
    replaces them all.
    """
    base = Path(directory)
    run_file = base / "run.toml"
    if not run_file.is_file():
        raise ConfigError("no run.toml here: --cluster takes a cluster directory (run.toml, topology, node "
                          "configs)", file=str(base))
    topology = cluster_topology(run_file)
    names = [node_key_name(i) for i in topology.ids] + [BOOTSTRAP_KEY, OPERATOR_KEY]
    keys_dir = base / KEYS_DIR
    existing = {n for n in names if all(p.exists() for p in key_paths(keys_dir, n))}
    public = ensure_keypairs(keys_dir, names, force=force)
    created = names if force else [n for n in names if n not in existing]
    stale = [spec.id for spec in topology.nodes
             if spec.public_key is not None and spec.public_key.encode() != public[node_key_name(spec.id)]]
    return ClusterKeys(keys_dir, public, created, stale)


def key_owners(topology: Topology, *, source: str | None = None) -> dict[bytes, int]:
    """Public key -> node id over the topology's keyed nodes; two nodes with one key is an error."""
    owners: dict[bytes, int] = {}
    for spec in topology.nodes:
        if spec.public_key is None:
            continue
        key = spec.public_key.encode()
        if key in owners:
            raise TopologyError(f"nodes {owners[key]} and {spec.id} have the same public_key: each node needs its "
                                "own key pair", file=source, key="nodes")
        owners[key] = spec.id
    return owners
