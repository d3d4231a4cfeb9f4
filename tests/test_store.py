"""EventStore: persistence, dedupe across restarts, queries, schema, crash safety."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories import T0, by_name, gone_cluster, service, spot_replica, ssh_replica
from wfdash.collect.events import Event, diff_snapshots
from wfdash.collect.kinds import EventKind, ReplicaStatus
from wfdash.collect.store import (
    SCHEMA_VERSION,
    EventStore,
    EventStoreError,
    default_state_dir,
)

REPO = Path(__file__).resolve().parent.parent


def event(
    key: str,
    ts: float = T0,
    service_name: str = "bitnet",
    kind: EventKind = EventKind.STATUS_CHANGED,
    replica_id: int | None = 1,
) -> Event:
    return Event(
        ts=ts,
        service=service_name,
        kind=kind,
        replica_id=replica_id,
        message=f"event {key}",
        data={"key": key, "nested": {"list": [1, 2.5, None]}},
        dedupe_key=key,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "events.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[EventStore]:
    with EventStore(db) as opened:
        yield opened


# --- round trips ----------------------------------------------------------------------


def test_commit_cycle_round_trip(store: EventStore) -> None:
    assert store.last_seen() == {}
    assert not store.has_last_seen()
    snapshot = [service(ssh_replica(1), spot_replica(8)), service(ssh_replica(2), name="vllm")]
    events = [event("a", T0), event("b", T0 + 1, replica_id=None, kind=EventKind.ACTION)]
    assert store.commit_cycle(events, snapshot, now=T0 + 1) == events
    assert store.query() == list(reversed(events))
    assert store.last_seen() == by_name(*snapshot)
    assert store.has_last_seen()


def test_empty_snapshot_is_a_last_seen(store: EventStore) -> None:
    store.commit_cycle([], [], now=T0)
    assert store.last_seen() == {}
    assert store.has_last_seen()  # ran before and saw no services: not a first run


def test_failed_poll_keeps_last_seen(store: EventStore) -> None:
    snapshot = [service(ssh_replica(1))]
    store.commit_cycle([], snapshot, now=T0)
    assert store.commit_cycle([event("x")], None, now=T0 + 5) == [event("x")]
    assert store.last_seen() == by_name(*snapshot)


def test_dedupe_across_cycles_and_within_one(store: EventStore) -> None:
    assert store.commit_cycle([event("a"), event("b")], None, now=T0) == [event("a"), event("b")]
    again = event("a", ts=T0 + 10)
    assert store.commit_cycle([again, event("c"), event("c")], None, now=T0 + 10) == [event("c")]
    stored = store.query()
    assert [e.dedupe_key for e in stored] == ["c", "b", "a"]
    assert stored[-1].ts == T0  # the first sighting is kept


def test_record(store: EventStore) -> None:
    action = event("action:1", kind=EventKind.ACTION, replica_id=None)
    assert store.record(action)
    assert not store.record(action)
    assert store.query(kinds={EventKind.ACTION}) == [action]


def test_restart_does_not_record_a_preemption_twice(db: Path) -> None:
    ready = service(ssh_replica(1), spot_replica(8))
    preempted = service(ssh_replica(1), gone_cluster(spot_replica(8)))
    replaced = service(ssh_replica(1), spot_replica(9, ReplicaStatus.PENDING))

    with EventStore(db) as store:  # first run ever: a baseline
        assert not store.has_last_seen()
        events = diff_snapshots(store.last_seen(), [ready], T0, baseline=True)
        assert store.commit_cycle(events, [ready], T0) == []
        events = diff_snapshots(store.last_seen(), [preempted], T0 + 5)
        assert [e.kind for e in store.commit_cycle(events, [preempted], T0 + 5)] == [
            EventKind.PREEMPTED
        ]

    with EventStore(db) as store:  # restarted: diff against what the last run saw
        assert store.last_seen() == by_name(preempted)
        events = diff_snapshots(store.last_seen(), [replaced], T0 + 60)
        new = store.commit_cycle(events, [replaced], T0 + 60)
        assert [(e.kind, e.data.get("reason")) for e in new] == [
            (EventKind.REPLICA_REMOVED, "preempted"),
            (EventKind.REPLICA_ADDED, None),
        ]

    with EventStore(db) as store:
        # A run that lost its snapshot and sees the PREEMPTED row again (baseline), and
        # one diffing from the READY snapshot (the inference path): same key, not stored.
        again = diff_snapshots({}, [preempted], T0 + 90, baseline=True)
        inferred = diff_snapshots(by_name(ready), [replaced], T0 + 95)
        assert store.commit_cycle(again + inferred, None, T0 + 95) == [
            e for e in inferred if e.kind is not EventKind.PREEMPTED
        ]
        assert len(store.query(kinds={EventKind.PREEMPTED})) == 1


def test_last_seen_from_an_incompatible_model_is_ignored(store: EventStore, db: Path) -> None:
    store.commit_cycle([event("a")], [service(ssh_replica(1))], now=T0)
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE last_seen SET services = ?", ('[{"name": "bitnet", "gone": 1}]',))
    assert store.last_seen() == {}
    assert not store.has_last_seen()  # the caller diffs with baseline=True
    assert store.query() == [event("a")]


# --- queries --------------------------------------------------------------------------


def test_query_filters(store: EventStore) -> None:
    events = [
        event("a1", T0 + 1, "alpha", EventKind.REPLICA_ADDED),
        event("b2", T0 + 2, "bitnet", EventKind.PREEMPTED),
        event("a3", T0 + 3, "alpha", EventKind.STATUS_CHANGED),
        event("b4", T0 + 4, "bitnet", EventKind.STATUS_CHANGED),
        event("a5", T0 + 5, "alpha", EventKind.PREEMPTED),
    ]
    store.commit_cycle(events, None, now=T0 + 5)

    def keys(**filters: object) -> list[str]:
        return [e.dedupe_key for e in store.query(**filters)]  # type: ignore[arg-type]

    assert keys() == ["a5", "b4", "a3", "b2", "a1"]
    assert keys(service="alpha") == ["a5", "a3", "a1"]
    assert keys(since=T0 + 2, until=T0 + 4) == ["a3", "b2"]  # since <= ts < until
    assert keys(kinds={EventKind.PREEMPTED}) == ["a5", "b2"]
    assert keys(kinds=[]) == []
    assert keys(service="bitnet", kinds={EventKind.STATUS_CHANGED, EventKind.PREEMPTED}) == [
        "b4",
        "b2",
    ]
    assert keys(limit=2) == ["a5", "b4"]
    assert keys(service="nope") == []


def test_same_timestamp_is_newest_inserted_first(store: EventStore) -> None:
    store.commit_cycle([event("first"), event("second")], None, now=T0)
    assert [e.dedupe_key for e in store.query()] == ["second", "first"]


def test_prune(store: EventStore) -> None:
    store.commit_cycle([event(str(i), T0 + i) for i in range(5)], None, now=T0 + 5)
    assert store.prune(older_than=T0 + 3) == 3
    assert [e.dedupe_key for e in store.query()] == ["4", "3"]


def test_concurrent_writers(store: EventStore) -> None:
    def write(thread: int) -> None:
        for i in range(50):
            store.record(event(f"{thread}:{i}", T0 + i))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.query(limit=1000)) == 200


# --- the file -------------------------------------------------------------------------


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WFDASH_STATE_DIR", str(tmp_path / "wf"))
    assert default_state_dir() == tmp_path / "wf"
    with EventStore() as store:
        assert store.path == tmp_path / "wf" / "events.sqlite3"
    assert store.path.is_file()


def test_schema_and_pragmas(store: EventStore, db: Path) -> None:
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {
            row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
    assert {"events_service_ts", "events_ts"} <= indexes


def test_reopen_keeps_everything(db: Path) -> None:
    with EventStore(db) as store:
        store.commit_cycle([event("a")], [service(ssh_replica(1))], now=T0)
    with EventStore(db) as store:
        assert store.query() == [event("a")]
        assert store.last_seen() == by_name(service(ssh_replica(1)))


def test_newer_schema_is_refused(db: Path) -> None:
    EventStore(db).close()
    with sqlite3.connect(db) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(EventStoreError, match="newer wfdash"):
        EventStore(db)


def test_corrupt_file_is_a_clear_error(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not an SQLite database\n" * 200)
    with pytest.raises(EventStoreError, match="not a usable wfdash event database") as info:
        EventStore(db)
    assert str(db) in str(info.value)


def test_another_programs_database_is_refused(db: Path) -> None:
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as raw:
        raw.execute("CREATE TABLE notes (body TEXT)")
    with pytest.raises(EventStoreError, match="another program"):
        EventStore(db)


def test_closed_store_raises_store_error(db: Path) -> None:
    store = EventStore(db)
    store.close()
    with pytest.raises(EventStoreError):
        store.query()


# --- crash safety ---------------------------------------------------------------------


def test_sigkill_mid_write_loses_nothing_committed(db: Path, tmp_path: Path) -> None:
    """A writer killed at a random point: the file is intact, every commit it reported
    is there, and the snapshot matches the events it was committed with."""
    for run, delay in enumerate((0.2, 0.35, 0.5)):
        tag = f"run{run}"
        stderr = tmp_path / f"{tag}.stderr"
        with stderr.open("w") as err:
            child = subprocess.Popen(
                [sys.executable, "-m", "tests.store_crash_writer", str(db), tag],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
            assert child.stdout is not None
            first = child.stdout.readline()  # the writer is up and committing
            if not first:
                child.wait()
                pytest.fail(f"writer died before its first commit:\n{stderr.read_text()}")
            time.sleep(delay)
            child.send_signal(signal.SIGKILL)
            output = first + child.stdout.read()
            child.wait()
        assert child.returncode == -signal.SIGKILL
        printed = output.split("\n")[:-1]  # a cut-off last line may or may not be committed
        assert len(printed) >= 3

        with sqlite3.connect(db) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        with EventStore(db) as store:
            stored = {e.dedupe_key: e for e in store.query(limit=1_000_000)}
            assert set(printed) <= stored.keys()
            cycles = [e.data["cycle"] for e in stored.values() if e.data["tag"] == tag]
            # One transaction: the snapshot is the one of the last committed cycle.
            assert store.last_seen()["bitnet"].target_num_replicas == max(cycles)
