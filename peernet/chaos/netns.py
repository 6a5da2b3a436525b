"""Network namespaces for a local cluster: one per process, joined by veths to a bridge, with nftables and tc."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterable, Sequence

from peernet.errors import NetnsError
from peernet.interrupts import deferred_signals
from peernet.node.preflight import lab_tools_problem
from peernet.procs import Reaper

log = logging.getLogger("peernet.chaos")

SUBNET = "10.213.0"  # exists only inside the lab's namespaces, never on the host
TABLE = "peernet_chaos"


def _run(cmd: Sequence[str]) -> None:
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetnsError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")


def check_available(reaper: Reaper | None = None) -> str | None:
    """Why a lab cannot be built here, or None when it can (``reaper``: told of the probe namespace)."""
    problem = lab_tools_problem()
    if problem is not None:
        return problem
    # Root in a container may still lack the capability to make namespaces: try one.
    probe = f"pnprobe{os.getpid() % 100000}"
    if reaper is not None:
        reaper.watch_netns(probe)
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class NetnsLab:
    """Members (``"boot"``, ``"n0"``, ...) each get a namespace with ``eth0`` at ``10.213.0.<k+1>``.

    The bridge lives in a namespace of its own, so nothing is added to the host's network. ``close()``
    deletes every namespace it made (which removes their links, nftables tables and tc qdiscs); it is safe to
    call twice. With a ``reaper`` each namespace is announced to it before it is made, so a launcher killed
    at any point leaves none behind.
    """

    def __init__(self, members: Sequence[str], *, tag: str | None = None, reaper: Reaper | None = None) -> None:
        if len(members) > 250:
            raise NetnsError(f"at most 250 members per lab, got {len(members)}")
        self.tag = tag or f"pn{os.getpid() % 100000}"
        self.members = list(members)
        self.hub = f"{self.tag}-hub"
        self.created: list[str] = []
        self.reaper = reaper

    def ns(self, member: str) -> str:
        return f"{self.tag}-{member}"

    def address(self, member: str) -> str:
        return f"{SUBNET}.{self.members.index(member) + 1}"

    def exec_prefix(self, member: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(member)]

    def _in(self, member_ns: str, *cmd: str) -> None:
        _run(["ip", "netns", "exec", member_ns, *cmd])

    def open(self) -> NetnsLab:
        reason = check_available(self.reaper)
        if reason:
            raise NetnsError(reason)
        try:
            self._add_ns(self.hub)
            self._in(self.hub, "ip", "link", "add", "br0", "type", "bridge")
            self._in(self.hub, "ip", "link", "set", "br0", "up")
            for k, member in enumerate(self.members):
                ns = self.ns(member)
                self._add_ns(ns)
                peer = f"v{k}"
                _run(["ip", "link", "add", peer, "netns", self.hub, "type", "veth", "peer", "name", "eth0",
                      "netns", ns])
                self._in(self.hub, "ip", "link", "set", peer, "master", "br0")
                self._in(self.hub, "ip", "link", "set", peer, "up")
                self._in(ns, "ip", "addr", "add", f"{self.address(member)}/24", "dev", "eth0")
                self._in(ns, "ip", "link", "set", "eth0", "up")
                # One table per member: `loss` and `partition` chains on input, replaced as the scenario runs.
                self._in(ns, "nft", f"add table inet {TABLE}; "
                         f"add chain inet {TABLE} loss {{ type filter hook input priority 0; policy accept; }}; "
                         f"add chain inet {TABLE} partition {{ type filter hook input priority 1; policy accept; }}")
        except BaseException:
            self.close()
            raise
        log.info("network lab %s: %d namespaces on %s.0/24", self.tag, len(self.members), SUBNET)
        return self

    def _add_ns(self, ns: str) -> None:
        if self.reaper is not None:
            self.reaper.watch_netns(ns)
        with deferred_signals():  # made and not recorded, close() would miss it
            _run(["ip", "netns", "add", ns])
            self.created.append(ns)
        _run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])

    def set_loss(self, percent: float, members: Iterable[str] | None = None) -> None:
        """Drop this share of every member's incoming packets at random (nftables numgen)."""
        per_mille = round(percent * 10)
        for member in members or self.members:
            ns = self.ns(member)
            self._in(ns, "nft", f"flush chain inet {TABLE} loss")
            if per_mille >= 1000:
                self._in(ns, "nft", f"add rule inet {TABLE} loss drop")
            elif per_mille > 0:
                self._in(ns, "nft", f"add rule inet {TABLE} loss numgen random mod 1000 < {per_mille} drop")

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        """Drop traffic between groups; members in no group form one more group (the bootstrap, usually)."""
        listed = {m for g in groups for m in g}
        all_groups = [list(g) for g in groups] + [[m for m in self.members if m not in listed]]
        for group in all_groups:
            others = [self.address(m) for g in all_groups if g is not group for m in g]
            for member in group:
                ns = self.ns(member)
                self._in(ns, "nft", f"flush chain inet {TABLE} partition")
                if others:
                    self._in(ns, "nft", f"add rule inet {TABLE} partition ip saddr {{ {', '.join(others)} }} drop")

    def heal(self) -> None:
        for member in self.members:
            self._in(self.ns(member), "nft", f"flush chain inet {TABLE} partition")

    def set_rate(self, rate: str, members: Iterable[str] | None = None) -> None:
        """Limit each member's outgoing bandwidth with a token bucket (tc tbf), e.g. ``"100mbit"``."""
        for member in members or self.members:
            self._in(self.ns(member), "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate,
                     "burst", "64kb", "latency", "400ms")

    def close(self) -> list[str]:
        """Delete every namespace made (a stop signal waits until all are gone); return those deleted."""
        removed = []
        with deferred_signals():
            for ns in reversed(self.created):
                proc = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
                if proc.returncode != 0:
                    log.warning("could not delete namespace %s: %s", ns, proc.stderr.strip())
                else:
                    removed.append(ns)
            self.created.clear()
        return removed

    def __enter__(self) -> NetnsLab:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
