"""A node's CURVE keys: load them from its config and check them against the topology before any socket opens."""

from __future__ import annotations

from dataclasses import dataclass

from peernet.bootstrap.client import ClientCurve
from peernet.core.topology import Topology
from peernet.errors import ConfigError
from peernet.node.config import NodeConfig
from peernet.security.cluster import key_owners
from peernet.security.keys import load_public_key, load_secret_key
from peernet.transport.zmq_transport import CurveKeys


@dataclass(frozen=True)
class NodeKeys:
    """This node's key pair, its neighbours' public keys and the bootstrap's (z85 bytes)."""

    public: bytes
    secret: bytes
    neighbours: dict[int, bytes]
    bootstrap: bytes

    def transport(self) -> CurveKeys:
        """For the ZmqTransport: dial neighbours with their keys, admit exactly those keys."""
        return CurveKeys(self.public, self.secret, dict(self.neighbours))

    def client(self) -> ClientCurve:
        """For the BootstrapClient (registration and heartbeats)."""
        return ClientCurve(self.bootstrap.decode(), self.public.decode(), self.secret.decode())


def load_node_keys(cfg: NodeConfig, topology: Topology, *, topology_file: str | None = None) -> NodeKeys | None:
    """The node's keys when ``cfg.secret_key`` is set, else None; ConfigError for any inconsistency.

    With a secret key: its public half must be the topology's key for this node, every neighbour needs a
    key in the topology, and the bootstrap's key must be given. Without one, the topology must not give
    this node a key either (its neighbours and the bootstrap would refuse a plain connection).
    """
    own = next(spec.public_key for spec in topology.nodes if spec.id == cfg.id)
    if cfg.secret_key is None:
        if own is not None:
            raise ConfigError(f"the topology gives node {cfg.id} a public key, so its neighbours and the bootstrap "
                              "expect CURVE: set secret_key (and bootstrap_public_key_file) in the node config, or "
                              "remove the keys from the topology", key="secret_key")
        return None
    public, secret = load_secret_key(cfg.secret_key)
    owners = key_owners(topology, source=topology_file)
    if own is None:
        raise ConfigError(f"the node has a secret_key but the topology gives node {cfg.id} no public key: add "
                          f"public_key_file = \"keys/node{cfg.id}.key\" to its [[nodes]] table",
                          file=topology_file, key="nodes")
    if own.encode() != public:
        raise ConfigError(f"the public key of {cfg.secret_key} is not the topology's key for node {cfg.id} "
                          f"({own[:8]}...): wrong key file, or the topology is stale", key="secret_key")
    neighbours = {j: spec.public_key for spec in topology.nodes if (j := spec.id) in topology.neighbours(cfg.id)}
    unkeyed = sorted(j for j, key in neighbours.items() if key is None)
    if unkeyed:
        raise ConfigError(f"node {cfg.id} runs CURVE but the topology has no public key for its neighbour(s) "
                          f"{unkeyed}", file=topology_file, key="nodes")
    if cfg.bootstrap_public_key_file is not None:
        bootstrap = load_public_key(cfg.bootstrap_public_key_file)
    else:
        assert cfg.bootstrap_public_key is not None  # NodeConfig checks that one of the two is set
        bootstrap = cfg.bootstrap_public_key.encode()
    if bootstrap in owners:
        raise ConfigError(f"the bootstrap's public key is node {owners[bootstrap]}'s key in the topology: the "
                          "bootstrap needs its own pair (keys/bootstrap.key)", key="bootstrap_public_key_file")
    return NodeKeys(public, secret, {j: k.encode() for j, k in neighbours.items() if k is not None}, bootstrap)
