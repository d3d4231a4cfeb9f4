"""The persistent event store: SQLite under the platformdirs state dir.

SkyServe forgets preempted replicas within a minute, so wfdash's record of them must
survive its own restarts and crashes. Each poll cycle commits, in one transaction, the
new events and the snapshot they were diffed into: after a crash the next wfdash diffs
against exactly the snapshot its recorded events describe, so nothing is lost and
nothing is recorded twice. Events carry a ``dedupe_key`` (UNIQUE) as a second guard.

The database is opened with WAL and ``synchronous=FULL`` (a commit that returned is on
disk), and serialised by a lock so the poller can call it from worker threads.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

import platformdirs

from wfdash.collect.kinds import EventKind

if TYPE_CHECKING:
    from pydantic import TypeAdapter

    from wfdash.collect.events import Event
    from wfdash.collect.model import Service

SCHEMA_VERSION = 1
# 'wfds': marks the file as ours, so another program's SQLite file is refused.
APPLICATION_ID = 0x77666473

# The migration from version N-1 to N is at index N-1. Pending ones run in one transaction
# with the user_version bump, so a database is always at exactly one known version.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            service TEXT NOT NULL,
            kind TEXT NOT NULL,
            replica_id INTEGER,
            message TEXT NOT NULL,
            data TEXT NOT NULL,
            dedupe_key TEXT NOT NULL UNIQUE
        )""",
        "CREATE INDEX events_service_ts ON events (service, ts)",
        "CREATE INDEX events_ts ON events (ts)",
        # One row: the services of the last successful poll, as a JSON list.
        """CREATE TABLE last_seen (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            saved_at REAL NOT NULL,
            services TEXT NOT NULL
        )""",
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_BUSY_TIMEOUT_MS = 5000


class EventStoreError(Exception):
    """The event database cannot be opened or used; the message says why and where."""


@cache
def _services_json() -> TypeAdapter[list[Service]]:
    """The last-seen snapshot's (de)serialiser, built on first use: the dashboard opens
    the store before its first paint, which building pydantic schemas would delay."""
    from pydantic import TypeAdapter

    from wfdash.collect.model import Service

    return TypeAdapter(list[Service])


def default_state_dir() -> Path:
    """``$WFDASH_STATE_DIR``, else the platform's user state dir for wfdash."""
    override = os.environ.get("WFDASH_STATE_DIR")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_state_dir("wfdash"))


class EventStore:
    """Events and the last-seen snapshot in one SQLite file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else default_state_dir() / "events.sqlite3"
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise EventStoreError(f"cannot create {self.path.parent}: {exc}") from exc
        self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) below.
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise EventStoreError(f"cannot open event database {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            _migrate(conn, self.path)
        except sqlite3.Error as exc:
            conn.close()
            raise EventStoreError(
                f"{self.path} is not a usable wfdash event database ({exc}); "
                "move it aside or delete it to start a new one"
            ) from exc
        except EventStoreError:
            conn.close()
            raise
        return conn

    # --- writing ---------------------------------------------------------------------

    def commit_cycle(
        self, events: Sequence[Event], services: Sequence[Service] | None, now: float
    ) -> list[Event]:
        """Store one poll cycle's events and the snapshot they lead to, atomically.

        ``services`` None means the status poll failed: the last-seen snapshot stays as
        it was, so the next successful poll is diffed against it. Returns the events
        that were new (a dedupe_key already stored drops the event).
        """
        with self._transaction("commit a poll cycle") as conn:
            new = [event for event in events if _insert(conn, event)]
            if services is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO last_seen (id, saved_at, services) VALUES (1, ?, ?)",
                    (now, _services_json().dump_json(list(services)).decode()),
                )
        return new

    def record(self, event: Event) -> bool:
        """Store one event (an audit entry, say); True if it was not stored before."""
        with self._transaction("record an event") as conn:
            return _insert(conn, event)

    def prune(self, older_than: float) -> int:
        """Delete events with ``ts`` before ``older_than``; returns how many."""
        with self._transaction("prune events") as conn:
            return conn.execute("DELETE FROM events WHERE ts < ?", (older_than,)).rowcount

    # --- reading ---------------------------------------------------------------------

    def last_seen(self) -> dict[str, Service]:
        """The services ``commit_cycle`` last persisted, by name ({} if none or unreadable)."""
        return self._load_last_seen() or {}

    def has_last_seen(self) -> bool:
        """Whether a usable last-seen snapshot exists (even one with no services).

        False means wfdash never completed a poll with this database, or the snapshot
        was written by a version whose model no longer validates: the caller then diffs
        with ``baseline=True`` instead of reporting the whole fleet as new.
        """
        return self._load_last_seen() is not None

    def _load_last_seen(self) -> dict[str, Service] | None:
        with self._guard("read the last-seen services"):
            row = self._conn.execute("SELECT services FROM last_seen WHERE id = 1").fetchone()
        if row is None:
            return None
        from pydantic import ValidationError

        try:
            services = _services_json().validate_json(row[0])
        except ValidationError:
            return None  # written by an older model: start over from a baseline
        return {service.name: service for service in services}

    def query(
        self,
        *,
        service: str | None = None,
        since: float | None = None,
        until: float | None = None,
        kinds: Collection[EventKind] | None = None,
        limit: int = 500,
    ) -> list[Event]:
        """Events newest first, filtered by service, ``since <= ts < until`` and kinds."""
        clauses: list[str] = []
        params: list[object] = []
        if service is not None:
            clauses.append("service = ?")
            params.append(service)
        if since is not None:
            clauses.append("ts >= ?")
            params.append(since)
        if until is not None:
            clauses.append("ts < ?")
            params.append(until)
        if kinds is not None:
            kind_values = sorted(EventKind(kind).value for kind in kinds)
            clauses.append(f"kind IN ({', '.join('?' * len(kind_values))})")
            params.extend(kind_values)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            "SELECT ts, service, kind, replica_id, message, data, dedupe_key FROM events "
            f"{where} ORDER BY ts DESC, id DESC LIMIT ?"
        )
        params.append(max(0, limit))
        with self._guard("query events"):
            rows = self._conn.execute(sql, params).fetchall()
        from wfdash.collect.events import Event

        return [
            Event(
                ts=ts,
                service=name,
                kind=EventKind(kind),
                replica_id=replica_id,
                message=message,
                data=json.loads(data),
                dedupe_key=key,
            )
            for ts, name, kind, replica_id, message, data, key in rows
        ]

    # --- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals -------------------------------------------------------------------

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Hold the lock; turn SQLite's errors into EventStoreError."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot {action} in {self.path}: {exc}") from exc

    @contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the body returns, rolled back otherwise.

        BEGIN IMMEDIATE takes the write lock up front, so a second wfdash on the same
        file waits (busy_timeout) instead of failing halfway through.
        """
        with self._guard(action):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                _rollback(self._conn)
                raise
            self._conn.execute("COMMIT")


def _insert(conn: sqlite3.Connection, event: Event) -> bool:
    cursor = conn.execute(
        "INSERT OR IGNORE INTO events (ts, service, kind, replica_id, message, data, dedupe_key)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            event.ts,
            event.service,
            event.kind.value,
            event.replica_id,
            event.message,
            json.dumps(event.data, separators=(",", ":"), sort_keys=True),
            event.dedupe_key,
        ),
    )
    return cursor.rowcount == 1


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to SCHEMA_VERSION; refuse files that are not ours or too new."""
    conn.execute("BEGIN IMMEDIATE")  # re-read under the write lock: another wfdash may migrate
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise EventStoreError(
                f"{path} was written by a newer wfdash (schema version {version}; this one "
                f"knows up to {SCHEMA_VERSION}): upgrade wfdash, or set WFDASH_STATE_DIR "
                "to use another database"
            )
        foreign_tables = version == 0 and conn.execute("SELECT 1 FROM sqlite_master").fetchone()
        if app_id not in (0, APPLICATION_ID) or foreign_tables:
            raise EventStoreError(
                f"{path} is an SQLite database of another program, not wfdash's events"
            )
        for statements in _MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        _rollback(conn)
        raise
    conn.execute("COMMIT")


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite rolls back by itself on some errors (disk full, I/O): then there is no
    # transaction left, and a ROLLBACK would hide the original error behind its own.
    if conn.in_transaction:
        conn.execute("ROLLBACK")
