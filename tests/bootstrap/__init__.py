"""Shared helpers of the bootstrap tests: tiny run settings and topology files in a temporary directory."""

from __future__ import annotations

from pathlib import Path

from peernet.core.topology import generate
from peernet.topology_files import save_topology


def write_run(directory: Path, n: int = 3, seed: int = 0) -> Path:
    """A quadratic run over a ring of ``n`` nodes; returns the run.toml path (topology beside it)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_topology(generate("ring", n), directory / "topology.toml")
    run = directory / "run.toml"
    run.write_text(f'dataset = "quadratic"\ntopology = "topology.toml"\nseed = {seed}\nrounds = 10\n')
    return run


def write_config(directory: Path, *, listen: str = "tcp://127.0.0.1:0", node_ttl: float = 15.0,
                 max_nodes: int = 1024, n: int = 3) -> Path:
    """bootstrap.toml next to a fresh run; the port 0 default lets the OS pick a free port."""
    write_run(directory, n)
    path = directory / "bootstrap.toml"
    path.write_text(f'listen = "{listen}"\nrun = "run.toml"\nstate_dir = "state/bootstrap"\n'
                    f"node_ttl = {node_ttl}\nmax_nodes = {max_nodes}\n")
    return path
