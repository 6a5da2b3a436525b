"""What a daemon can run: the node-id range, static endpoints, CURVE key values and a W with a spectral gap."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable

from peernet.errors import TopologyError, quoted

#: The largest node id: the bootstrap protocol carries ids as int32 and ZeroMQ routing ids as at most 10 ASCII
#: digits (peernet.transport.zmq_transport); a topology with a larger id could never start.
MAX_NODE_ID = 2**31 - 1
#: What the bootstrap accepts as a registered endpoint, so a static one is held to it too.
MAX_ENDPOINT_CHARS = 256
#: A Unix socket path is at most 107 bytes (sun_path holds 108 with the terminating NUL).
MAX_IPC_PATH_BYTES = 107

_Z85_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_VALUE = {c: i for i, c in enumerate(_Z85_DIGITS)}
_P25519 = 2**255 - 19
# Curve25519 u-coordinates of small order (with 0, 1 and p - 1): a key equal to one of them gives every peer
# the same shared secret (all zeros), so libsodium refuses it and every CURVE handshake with it fails.
_SMALL_ORDER = frozenset({
    0, 1, _P25519 - 1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
})
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::"})


def finite_number(x: object) -> bool:
    """An int or float (not a bool) that is finite as a float: a huge int would overflow float()."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _z85_groups(text: str) -> list[int]:
    """The eight values a 40-character z85 string encodes (five base-85 digits each, most significant first)."""
    groups = []
    for g in range(8):
        value = 0
        for c in text[5 * g : 5 * g + 5]:
            value = value * 85 + _Z85_VALUE[c]
        groups.append(value)
    return groups


def z85_problem(text: str) -> str | None:
    """Why ``text`` is not the z85 form of a 32-byte key (40 characters, 8 groups of 5), or None."""
    if len(text) != 40:
        return f"must be 40 z85 characters, got {len(text)} characters"
    bad = sorted(set(text) - _Z85_VALUE.keys())
    if bad:
        return f"has characters outside z85: {quoted(''.join(bad))}"
    for g, value in enumerate(_z85_groups(text)):
        if value > 0xFFFFFFFF:  # five z85 digits reach 85**5 - 1 > 2**32 - 1: such a group decodes to nothing
            return f"does not decode: characters {5 * g + 1}-{5 * g + 5} ({quoted(text[5 * g : 5 * g + 5])}) " \
                   "exceed 2**32 - 1"
    return None


def public_key_problem(text: str) -> str | None:
    """Why ``text`` cannot be a CURVE public key (not z85, or a small-order point), or None."""
    problem = z85_problem(text)
    if problem is not None:
        return problem
    raw = b"".join(value.to_bytes(4, "big") for value in _z85_groups(text))
    u = int.from_bytes(raw, "little") & (2**255 - 1)  # X25519 ignores the top bit
    if u % _P25519 in _SMALL_ORDER:
        return "is a small-order Curve25519 point (such as all zeros), not a key `peernet keygen` makes: every " \
               "CURVE handshake with it fails"
    return None


def endpoint_problem(endpoint: str) -> str | None:
    """Why ``endpoint`` is not a static address a node can bind and its neighbours dial, or None.

    Accepted: ``tcp://HOST:PORT`` (HOST a name, an IPv4 address or ``[IPv6]``, not a wildcard; PORT 1-65535) and
    ``ipc://PATH`` (1 to 107 bytes).
    """
    if len(endpoint) > MAX_ENDPOINT_CHARS:
        return f"is {len(endpoint)} characters long, more than {MAX_ENDPOINT_CHARS}"
    if not endpoint.isprintable() or any(c.isspace() for c in endpoint):
        return "contains whitespace or a control character"
    scheme, sep, address = endpoint.partition("://")
    if not sep:
        return "has no '<transport>://'"
    if scheme == "ipc":
        size = len(address.encode())
        if address in ("", "*"):
            return "needs a socket path after ipc:// (ipc://* picks one at random, which no neighbour can know)"
        return f"ipc path is {size} bytes, more than {MAX_IPC_PATH_BYTES}" if size > MAX_IPC_PATH_BYTES else None
    if scheme != "tcp":
        return f"transport {quoted(scheme, 16)} is not supported: use tcp:// or ipc://"
    host, colon, port = address.rpartition(":")
    if not colon or not port:
        return "has no port: expected tcp://HOST:PORT"
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        return f"port {quoted(port, 16)} is not a number in 1-65535 (a neighbour must be able to dial it)"
    return _host_problem(host)


def _host_problem(host: str) -> str | None:
    if host.startswith("[") and host.endswith("]"):
        try:
            ip = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{quoted(host, 48)} is not an IPv6 address"
        return "[::] is a wildcard (every interface), not an address to dial" if ip.is_unspecified else None
    if not host:
        return "has no host: expected tcp://HOST:PORT"
    if host in _WILDCARD_HOSTS:
        return f"{quoted(host)} is a wildcard (every interface), not an address a neighbour can dial"
    if all(c.isdigit() or c == "." for c in host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{quoted(host, 48)} is not an IPv4 address"
        return None
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return f"host {quoted(host, 48)} is not a host name, an IPv4 address or [IPv6]"
    return None


def check_spectral_gap(ids: tuple[int, ...], explicit: Iterable[tuple[int, int, float]], *, zero: float) -> None:
    """Refuse explicit weights whose W has no spectral gap, combinatorially in O(n + m).

    For a symmetric, doubly stochastic, non-negative W the eigenvalue 1 is simple exactly when the graph of
    positive-weight edges is connected, and -1 is an eigenvalue exactly when that graph is bipartite and every
    self weight is 0. Weights at or below ``zero`` (the row-sum tolerance) count as 0.
    """
    adj: dict[int, list[int]] = {i: [] for i in ids}
    self_weighted = False
    zero_edges = 0
    for a, b, w in explicit:
        if a == b:
            self_weighted = self_weighted or w > zero
        elif w > zero:
            adj[a].append(b)
            adj[b].append(a)
        else:
            zero_edges += 1
    side, odd = _two_colour(ids[0], adj)
    unreached = next((i for i in ids if i not in side), None)
    if unreached is not None:
        raise TopologyError(
            f"W has no spectral gap: over the edges of positive weight node {unreached} cannot be reached from node "
            f"{ids[0]} ({zero_edges} edge(s) have weight 0), so gossip never brings the nodes to one value",
            key="explicit_weights")
    if odd is None and not self_weighted and len(ids) > 1:
        a = ids[0]
        b = adj[a][0]
        raise TopologyError(
            f"W has no spectral gap: every self weight is 0 and the positive-weight graph is bipartite (nodes {a} "
            f"and {b} are on opposite sides), so W has eigenvalue -1 and values swing between the two sides "
            "forever; give at least one node a positive self weight", key="explicit_weights")


def _two_colour(start: int, adj: dict[int, list[int]]) -> tuple[dict[int, int], tuple[int, int] | None]:
    """BFS 2-colouring of ``start``'s component: each node's side, and an edge inside one side (None: bipartite)."""
    side = {start: 0}
    frontier = [start]
    odd: tuple[int, int] | None = None
    while frontier:
        nxt = []
        for a in frontier:
            for b in adj[a]:
                if b not in side:
                    side[b] = 1 - side[a]
                    nxt.append(b)
                elif side[b] == side[a] and odd is None:
                    odd = (a, b)
        frontier = nxt
    return side, odd
