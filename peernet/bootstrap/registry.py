"""The bootstrap's registry: registration rules over an SQLite file (no sockets; the caller passes the time)."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from peernet.core.topology import Topology
from peernet.errors import ConfigError, Refused

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    public_key TEXT,
    incarnation TEXT NOT NULL,
    registered_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    left INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'registered',
    round INTEGER NOT NULL DEFAULT 0,
    metrics TEXT NOT NULL DEFAULT '{}'
);
"""
#: The endpoint of a node that said it is loading its data (Registry.loading): it has none yet.
LOADING_ENDPOINT = ""
_COLUMNS = ("id", "endpoint", "public_key", "incarnation", "registered_at", "last_seen", "left", "state", "round",
            "metrics")


class Registry:
    """Who registered with which endpoint and incarnation, whether the run started, and each node's progress.

    Every change is committed before the method returns, so a restarted bootstrap with the same file
    carries on. ``now`` is wall-clock time (``time.time()``): it is persisted, so liveness survives a restart.
    """

    def __init__(self, path: str | Path, topology: Topology, fingerprint: str, *, node_ttl: float = 15.0,
                 max_nodes: int = 1024, fresh: bool = False) -> None:
        self.path = Path(path)
        self.topology = topology
        self.fingerprint = fingerprint
        self.node_ttl = node_ttl
        self.max_nodes = max_nodes
        self._ids = frozenset(topology.ids)
        self._keys = {spec.id: spec.public_key for spec in topology.nodes}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _acquire_lock(self.path.with_name(self.path.name + ".lock"))
        if fresh:
            for suffix in ("", "-wal", "-shm"):
                self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        try:
            # The service opens the registry in one thread and serves from another; only one uses it at a time.
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            os.close(self._lock)
            raise ConfigError(f"cannot open the registry: {exc}", file=str(self.path)) from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._check_meta()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise ConfigError(f"not a usable registry ({exc}); remove it or start the bootstrap with --fresh",
                              file=str(self.path)) from None
        except ConfigError:
            self.close()
            raise

    def _check_meta(self) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            with self._tx():
                self._db.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("schema", SCHEMA_VERSION), ("fingerprint", self.fingerprint), ("started", "0")])
            return
        if meta.get("schema") != SCHEMA_VERSION:
            raise ConfigError(f"registry schema {meta.get('schema')!r}, this version reads {SCHEMA_VERSION!r}; "
                              "start the bootstrap with --fresh", file=str(self.path))
        if meta.get("fingerprint") != self.fingerprint:
            raise ConfigError(f"registry belongs to another run (fingerprint {meta.get('fingerprint')}, the run "
                              f"settings give {self.fingerprint}); start the bootstrap with --fresh to discard it",
                              file=str(self.path))

    @contextmanager
    def _tx(self) -> Iterator[None]:
        # isolation_level=None means autocommit; an explicit BEGIN makes each change one atomic transaction.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
        if self._lock >= 0:
            os.close(self._lock)  # closing the descriptor releases the flock
            self._lock = -1

    # -- queries ------------------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'started'").fetchone()
        return bool(row) and row[0] == "1"

    def _row(self, node_id: int) -> dict[str, Any] | None:
        row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM nodes WHERE id = ?", (node_id,)).fetchone()
        return dict(zip(_COLUMNS, row, strict=True)) if row else None

    def _rows(self) -> list[dict[str, Any]]:
        rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM nodes ORDER BY id").fetchall()
        return [dict(zip(_COLUMNS, row, strict=True)) for row in rows]

    def _live(self, row: dict[str, Any], now: float) -> bool:
        return not row["left"] and now - row["last_seen"] < self.node_ttl

    def live_ids(self, now: float) -> set[int]:
        return {row["id"] for row in self._rows() if self._live(row, now)}

    def missing(self) -> list[int]:
        """Topology ids with no current (not left) registration; a node still loading has none yet."""
        present = {row["id"] for row in self._rows() if not row["left"] and row["endpoint"] != LOADING_ENDPOINT}
        return sorted(self._ids - present)

    def table(self) -> dict[int, dict[str, str | None]]:
        """Endpoint and public key of every registered node that has not left (and is not still loading)."""
        return {row["id"]: {"endpoint": row["endpoint"], "public_key": row["public_key"]}
                for row in self._rows() if not row["left"] and row["endpoint"] != LOADING_ENDPOINT}

    def status(self, now: float) -> list[dict[str, Any]]:
        """One entry per topology node, registered or not, for ``peernet status``."""
        rows = {row["id"]: row for row in self._rows()}
        out = []
        for node_id in sorted(self._ids):
            row = rows.get(node_id)
            if row is None:
                out.append({"id": node_id, "state": "unregistered", "round": None, "loss": None, "accuracy": None,
                            "last_seen_age": None, "bytes_out": None, "bytes_in": None, "endpoint": None,
                            "live": False, "left": False, "metrics": {}})
                continue
            metrics = json.loads(row["metrics"])
            out.append({"id": node_id, "state": row["state"], "round": row["round"], "loss": metrics.get("loss"),
                        "accuracy": metrics.get("accuracy"), "last_seen_age": max(0.0, now - row["last_seen"]),
                        "bytes_out": metrics.get("bytes_out"), "bytes_in": metrics.get("bytes_in"),
                        "endpoint": row["endpoint"] or None, "live": self._live(row, now), "left": bool(row["left"]),
                        "metrics": metrics})
        return out

    # -- changes ------------------------------------------------------------------------------------------

    def _admit(self, node_id: int, public_key: str | None, fingerprint: str, incarnation: str, now: float,
               replaces: str | None) -> tuple[dict[str, Any] | None, str]:
        """The node's row and 'new', 'again' (same incarnation) or 'replaced' (a restart); Refused if not admitted.

        ``replaces`` names the incarnation a restarted node succeeds (kept in its state directory): a node
        killed a moment ago need not wait for its old registration to time out.
        """
        if node_id not in self._ids:
            raise Refused(f"unknown node id {node_id}: the run's topology has ids {_show_ids(sorted(self._ids))}")
        if fingerprint != self.fingerprint:
            raise Refused(f"run fingerprint mismatch: expected {self.fingerprint[:12]}, got {fingerprint[:12]} "
                          "(the node's run settings or topology differ from the bootstrap's)")
        expected_key = self._keys.get(node_id)
        if expected_key is not None and public_key != expected_key:
            raise Refused(f"public key of node {node_id} does not match the one in the topology")
        row = self._row(node_id)
        if row is None:
            count = self._db.execute("SELECT COUNT(*) FROM nodes").fetchone()[0]
            if count >= self.max_nodes:
                raise Refused(f"registry full: {count} nodes registered, max_nodes is {self.max_nodes}")
            return None, "new"
        if row["incarnation"] == incarnation:
            return row, "again"
        if self._live(row, now) and (replaces is None or replaces != row["incarnation"]):
            age = max(0.0, now - row["last_seen"])
            raise Refused(f"node {node_id} is already registered by a live process (last seen {age:.1f}s ago); "
                          f"another process uses this id, or the old one has not timed out yet "
                          f"(node_ttl {self.node_ttl:g}s)")
        return row, "replaced"

    def register(self, node_id: int, endpoint: str, public_key: str | None, fingerprint: str, incarnation: str,
                 now: float, replaces: str | None = None) -> str:
        """Accept a node or raise Refused; returns 'new', 'again' (same incarnation) or 'replaced' (a restart).

        A node that said it was loading (:meth:`loading`) and now registers with that incarnation is 'new': only
        now does it have an endpoint and count for the start.
        """
        row, kind = self._admit(node_id, public_key, fingerprint, incarnation, now, replaces)
        if row is not None and kind == "again" and row["endpoint"] == LOADING_ENDPOINT:
            kind = "new"  # its first registration: a restart was said when it announced itself
        with self._tx():
            if row is None:
                self._db.execute("INSERT INTO nodes (id, endpoint, public_key, incarnation, registered_at, last_seen)"
                                 " VALUES (?, ?, ?, ?, ?, ?)", (node_id, endpoint, public_key, incarnation, now, now))
            else:
                # A restarted node keeps its last round and metrics until its first heartbeat replaces them.
                self._db.execute("UPDATE nodes SET endpoint = ?, public_key = ?, incarnation = ?, registered_at = ?,"
                                 " last_seen = ?, left = 0, state = 'registered' WHERE id = ?",
                                 (endpoint, public_key, incarnation, now, now, node_id))
            if not self.started and not self._missing_in_tx():
                self._db.execute("UPDATE meta SET value = '1' WHERE key = 'started'")
        return kind

    def loading(self, node_id: int, public_key: str | None, fingerprint: str, incarnation: str, now: float,
                replaces: str | None = None) -> str:
        """Note a node that is up and loading its data, with the checks of :meth:`register`; it has no endpoint
        yet, so it is in no address table and does not count for the start. Returns the kind, as register does;
        an incarnation that registered already keeps its registration (the announcement came late)."""
        row, kind = self._admit(node_id, public_key, fingerprint, incarnation, now, replaces)
        with self._tx():
            if row is None:
                self._db.execute("INSERT INTO nodes (id, endpoint, public_key, incarnation, registered_at, last_seen,"
                                 " state) VALUES (?, ?, ?, ?, ?, ?, 'loading')",
                                 (node_id, LOADING_ENDPOINT, public_key, incarnation, now, now))
            elif kind == "replaced" or row["endpoint"] == LOADING_ENDPOINT:
                self._db.execute("UPDATE nodes SET endpoint = ?, public_key = ?, incarnation = ?, registered_at = ?,"
                                 " last_seen = ?, left = 0, state = 'loading' WHERE id = ?",
                                 (LOADING_ENDPOINT, public_key, incarnation, now, now, node_id))
        return kind

    def _missing_in_tx(self) -> bool:
        present = {r[0] for r in self._db.execute("SELECT id FROM nodes WHERE left = 0 AND endpoint != ?",
                                                  (LOADING_ENDPOINT,))}
        return bool(self._ids - present)

    def _current(self, node_id: int, incarnation: str) -> dict[str, Any]:
        row = self._row(node_id)
        if row is None:
            raise Refused(f"node {node_id} is not registered; register first")
        if row["incarnation"] != incarnation:
            raise Refused(f"node {node_id} is registered by another incarnation (a newer process took over)")
        return row

    def wait_start(self, node_id: int, incarnation: str, now: float) -> bool:
        """Whether the run started; polling counts as a sign of life."""
        row = self._current(node_id, incarnation)
        if row["left"]:
            raise Refused(f"node {node_id} has left; register again")
        with self._tx():
            self._db.execute("UPDATE nodes SET last_seen = ? WHERE id = ?", (now, node_id))
            if row["state"] == "registered":
                self._db.execute("UPDATE nodes SET state = 'waiting' WHERE id = ?", (node_id,))
        return self.started

    def heartbeat(self, node_id: int, incarnation: str, round_: int, state: str, metrics: dict[str, Any],
                  now: float) -> None:
        row = self._current(node_id, incarnation)
        if row["left"]:
            raise Refused(f"node {node_id} has left; register again")
        if state == "loading":
            # A loading node knows no round yet (a restarted one keeps its last), and a report that was on its
            # way when the node registered must not take the registration back.
            round_, metrics = row["round"], metrics or json.loads(row["metrics"])
            state = "loading" if row["endpoint"] == LOADING_ENDPOINT else row["state"]
        with self._tx():
            self._db.execute("UPDATE nodes SET last_seen = ?, round = ?, state = ?, metrics = ? WHERE id = ?",
                             (now, round_, state, json.dumps(metrics), node_id))

    def leave(self, node_id: int, incarnation: str, now: float) -> bool:
        """Mark the node gone (its round and metrics stay); returns False if it had already left."""
        row = self._current(node_id, incarnation)
        if row["left"]:
            return False
        with self._tx():
            self._db.execute("UPDATE nodes SET left = 1, last_seen = ? WHERE id = ?", (now, node_id))
        return True


def _acquire_lock(path: Path) -> int:
    """Hold an exclusive flock so two bootstraps never share (or --fresh wipes) one registry."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError("another bootstrap is using this registry; stop it first or give this one another "
                          "state_dir", file=str(path.with_suffix(""))) from None
    return fd


def _show_ids(ids: list[int], limit: int = 8) -> str:
    shown = ", ".join(map(str, ids[:limit]))
    return f"[{shown}, ... ({len(ids)} nodes)]" if len(ids) > limit else f"[{shown}]"
