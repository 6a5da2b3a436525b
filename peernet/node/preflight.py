"""Pre-flight checks `peernet local` and `peernet chaos` run in-process before they touch a file or start a process."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peernet.config import RunSettings, resolve_topology
from peernet.core.topology import Topology
from peernet.errors import ConfigError, NetnsError


def preflight(settings: RunSettings, node_options: Mapping[str, Any], *, source: str = "node options",
              section: str = "", keys_dir: Path | None = None, network: bool = False) -> Topology:
    """Check what a node or the bootstrap would otherwise die of seconds after the start, with the messages
    `peernet simulate` gives: the topology, the data and partition, the model, the node options (``source``
    and ``section`` say where they were written), the key files already in ``keys_dir`` and, for a ``network``
    lab, root and its tools. Returns the topology."""
    topology = resolve_topology(settings, key_files=False)
    check_task(settings, topology.n)
    check_node_options(node_options, source, section)
    if keys_dir is not None:
        check_key_files(keys_dir)
    if network:
        check_lab_tools()
    return topology


def check_task(settings: RunSettings, nodes: int) -> None:
    """The dataset's files and labels, the partition over ``nodes`` and the model, as the simulator builds them,
    without decoding an image (the labels file is small and cached for the launcher's own use)."""
    from peernet.tasks import image_shards, make_task

    if settings.dataset == "quadratic":
        make_task(settings, nodes)
        return
    from peernet.data.datasets import INPUT_SHAPES, load_labels
    from peernet.models import build_model

    image_shards(settings, nodes, load_labels(settings.dataset, settings.data_dir)[0])
    build_model(settings.model, INPUT_SHAPES[settings.dataset], 10)


def check_node_options(options: Mapping[str, Any], source: str, section: str = "") -> None:
    """Node options as a node will parse them (NodeConfig: keys, types, ranges, [faults]); errors name ``source``
    and the key, under ``section`` (e.g. a scenario's ``nodes``)."""
    from peernet.node.config import LAUNCHER_KEYS, node_config_from_mapping

    def where(key: str | None) -> str | None:
        return f"{section}.{key}" if section and key else key

    reserved = sorted(set(options) & set(LAUNCHER_KEYS))
    if reserved:
        raise ConfigError("set by the launcher for each node; leave it out", file=source, key=where(reserved[0]))
    try:
        node_config_from_mapping({"id": 0, "run": "run.toml", **options}, source)
    except ConfigError as exc:
        raise type(exc)(exc.reason, file=source, key=where(exc.key)) from None


def check_key_files(keys_dir: Path) -> None:
    """Every key file already in ``keys_dir`` loads (an existing pair is kept and used, not made anew)."""
    from peernet.security.keys import PUBLIC_SUFFIX, SECRET_SUFFIX, load_public_key, load_secret_key

    if not keys_dir.is_dir():
        return
    for path in sorted(keys_dir.glob(f"*{PUBLIC_SUFFIX}")):
        load_public_key(path)
    for path in sorted(keys_dir.glob(f"*{SECRET_SUFFIX}")):
        load_secret_key(path)


def lab_tools_problem() -> str | None:
    """Why this host lacks root or a tool a network lab needs (ip, nft, tc), or None; whether namespaces can
    really be made is tried when the lab opens (peernet.chaos.netns.check_available)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in ("ip", "nft", "tc") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(f'`{tool}`' for tool in missing)} not installed (Debian: iproute2, nftables)"
    return None


def check_lab_tools() -> None:
    """Root and the tools a network lab needs, before anything starts."""
    problem = lab_tools_problem()
    if problem is not None:
        raise NetnsError(f"the scenario's [network] cannot run here: {problem}")
