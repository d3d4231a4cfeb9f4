"""The action runner: one action per service, never twice, always audited, cancellable."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import records
from wfdash.collect.events import Event
from wfdash.collect.kinds import EventKind
from wfdash.collect.mapping import map_services
from wfdash.collect.snapshot import ServiceView, Snapshot
from wfdash.collect.store import EventStore
from wfdash.control.actions import Action, Down, Scale, SwitchBackend, TerminateReplica
from wfdash.control.errors import ActionCancelled, ActionError
from wfdash.control.plan import DeploymentFiles, Plan, plan_action
from wfdash.control.runner import LOG_LINES, ActionRecord, ActionRunner

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "wf-bitnet"
SNAPSHOT = Snapshot(
    taken_at=0.0,
    source="test",
    services=tuple(
        ServiceView(s, ())
        for s in map_services([records.service(), records.service(name="wf-other")])
    ),
    status_ok=True,
)


def plan(action: Action) -> Plan:
    return plan_action(action, SNAPSHOT, DeploymentFiles(ROOT / "skypilot", environ={}))


SCALE = plan(Scale(service=SERVICE, min_replicas=4, max_replicas=8))
OTHER = plan(Scale(service="wf-other", min_replicas=4, max_replicas=8))


class Plane:
    """A control plane whose execute blocks until released, then returns or raises."""

    description = "fake plane"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.outcome: Callable[[threading.Event], str] = lambda _: "applied as version 4"
        self.lines: list[str] = []
        self.calls: list[Plan] = []

    def execute(self, plan: Plan, progress: Callable[[str], None], cancel: threading.Event) -> str:
        self.calls.append(plan)
        self.entered.set()
        for line in self.lines:
            progress(line)
        self.release.wait(10)
        return self.outcome(cancel)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def finished(runner: ActionRunner, record_id: str) -> ActionRecord:
    deadline = time.monotonic() + 10
    while any(r.id == record_id for r in runner.active()):
        assert time.monotonic() < deadline, runner.active()
        time.sleep(0.005)
    return next(r for r in runner.recent() if r.id == record_id)


def audit(store: EventStore) -> list[Event]:
    return list(reversed(store.query(kinds=[EventKind.ACTION])))


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with EventStore(tmp_path / "events.sqlite3") as opened:
        yield opened


def test_success_is_audited_before_and_after(store: EventStore) -> None:
    plane = Plane()
    plane.lines = ["validating", "Successfully updated service 'wf-bitnet' to version 4."]
    clock = Clock()
    runner = ActionRunner(plane, store, user="alice", clock=clock)
    updates: list[ActionRecord] = []
    record = runner.start(SCALE, updates.append)
    assert record.state == "running" and record.who == "alice"
    assert plane.entered.wait(5)
    # Written before the plane was called: a crash now still leaves a record.
    [started] = audit(store)
    assert started.message == f"ACTION {SCALE.summary} by alice: started"
    clock.now += 3
    plane.release.set()
    done = finished(runner, record.id)

    assert (done.state, done.result, done.error) == ("succeeded", "applied as version 4", None)
    assert done.finished == clock.now and done.log == plane.lines
    assert [u.state for u in updates] == ["running", "running", "succeeded"]
    assert [len(u.log) for u in updates] == [1, 2, 2]  # copies: they never change later
    started, succeeded = audit(store)
    assert succeeded.message == f"ACTION {SCALE.summary} by alice: succeeded (applied as version 4)"
    assert (started.service, started.kind, started.replica_id) == (SERVICE, EventKind.ACTION, None)
    assert started.dedupe_key != succeeded.dedupe_key
    data = succeeded.data
    assert data["who"] == "alice" and data["outcome"] == "succeeded"
    assert data["when"] == "2023-11-14T22:13:23+00:00"
    assert data["plane"] == "fake plane"
    assert data["action"] == SCALE.action.model_dump(mode="json")
    assert data["plan"]["command"] == SCALE.command
    assert data["plan"]["yaml_diff"] == SCALE.yaml_diff
    assert data["plan"]["cost_after_per_hour"] == SCALE.cost_after_per_hour
    assert "task" not in data["plan"]


def test_one_action_per_service_at_a_time(store: EventStore) -> None:
    plane = Plane()
    runner = ActionRunner(plane, store, user="alice", clock=Clock())
    first = runner.start(SCALE, lambda _: None)
    switch = plan(SwitchBackend(service=SERVICE, backend="vllm"))
    with pytest.raises(ActionError) as info:
        runner.start(switch, lambda _: None)
    assert str(info.value) == (
        f"{SCALE.summary} is still running (started 0 s ago): one change to {SERVICE} at a time"
    )
    other = runner.start(OTHER, lambda _: None)  # another service: fine
    assert {r.id for r in runner.active()} == {first.id, other.id}
    plane.release.set()
    finished(runner, first.id)
    finished(runner, other.id)
    assert len(plane.calls) == 2
    assert len(audit(store)) == 4  # the refused one left no entry


def test_a_repeated_key_press_never_applies_twice(store: EventStore) -> None:
    plane = Plane()
    plane.release.set()
    clock = Clock()
    runner = ActionRunner(plane, store, user="alice", clock=clock)
    finished(runner, runner.start(SCALE, lambda _: None).id)
    clock.now += 2
    again = plan(Scale(service=SERVICE, min_replicas=4, max_replicas=8))  # an equal plan
    with pytest.raises(
        ActionError, match=r"^the same action was applied 2 s ago: not applying it twice$"
    ):
        runner.start(again, lambda _: None)
    assert len(plane.calls) == 1
    clock.now += 10  # a deliberate repeat later is allowed
    finished(runner, runner.start(again, lambda _: None).id)
    assert len(plane.calls) == 2


def test_a_failure_leaves_a_clear_record_and_can_be_retried(store: EventStore) -> None:
    plane = Plane()
    plane.release.set()

    def fail(_: threading.Event) -> str:
        raise ActionError("SkyPilot API server unreachable: connection refused")

    plane.outcome = fail
    runner = ActionRunner(plane, store, user="alice")
    failed = finished(runner, runner.start(SCALE, lambda _: None).id)
    assert (failed.state, failed.error, failed.result) == (
        "failed",
        "SkyPilot API server unreachable: connection refused",
        None,
    )
    assert audit(store)[-1].message.endswith(
        "by alice: failed: SkyPilot API server unreachable: connection refused"
    )
    assert audit(store)[-1].data["error"] == failed.error
    plane.outcome = lambda _: "ok"
    assert finished(runner, runner.start(SCALE, lambda _: None).id).state == "succeeded"


def test_a_plane_bug_is_a_failure_too(store: EventStore) -> None:
    plane = Plane()
    plane.release.set()

    def crash(_: threading.Event) -> str:
        raise KeyError("replica_info")

    plane.outcome = crash
    runner = ActionRunner(plane, store, user="alice")
    done = finished(runner, runner.start(SCALE, lambda _: None).id)
    assert (done.state, done.error) == ("failed", "unexpected KeyError: 'replica_info'")
    assert [e.data["phase"] for e in audit(store)] == ["started", "failed"]


def test_cancel(store: EventStore) -> None:
    plane = Plane()

    def stop(cancel: threading.Event) -> str:
        if cancel.is_set():
            raise ActionCancelled("SkyPilot cancelled the request; what it had done stays done")
        return "finished anyway"

    plane.outcome = stop
    runner = ActionRunner(plane, store, user="bob")
    record = runner.start(SCALE, lambda _: None)
    assert plane.entered.wait(5)
    runner.cancel(record.id)
    runner.cancel(record.id)  # twice: once
    runner.cancel("no-such-action")
    plane.release.set()
    done = finished(runner, record.id)
    assert done.state == "cancelled"
    assert done.error == "SkyPilot cancelled the request; what it had done stays done"
    assert done.log == ["cancel requested by bob"]
    assert audit(store)[-1].data["outcome"] == "cancelled"
    runner.cancel(record.id)  # finished: a no-op


def test_read_only_refuses_everything(store: EventStore) -> None:
    plane = Plane()
    runner = ActionRunner(plane, store, user="alice", read_only=True)
    with pytest.raises(ActionError, match=r"^read-only mode: "):
        runner.start(plan(Down(service=SERVICE)), lambda _: None)
    assert plane.calls == [] and audit(store) == [] and runner.active() == []


def test_without_an_audit_log_nothing_runs(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.sqlite3")
    plane = Plane()
    runner = ActionRunner(plane, store, user="alice")
    store.close()
    with pytest.raises(ActionError, match=r"^cannot write the audit log, so nothing was changed: "):
        runner.start(SCALE, lambda _: None)
    assert plane.calls == [] and runner.active() == []


def test_log_is_bounded_and_display_errors_do_not_break_the_action(store: EventStore) -> None:
    plane = Plane()
    plane.lines = [f"line {i}\nwith a second line, token=abc123" for i in range(LOG_LINES + 50)]
    plane.release.set()

    def broken_display(_: ActionRecord) -> None:
        raise RuntimeError("widget gone")

    runner = ActionRunner(plane, store, user="alice")
    terminate = plan(TerminateReplica(service=SERVICE, replica_id=4))
    done = finished(runner, runner.start(terminate, broken_display).id)
    assert done.state == "succeeded"
    assert len(done.log) == LOG_LINES
    assert done.log[-1] == f"line {LOG_LINES + 49} with a second line, token=***"
    assert audit(store)[-1].replica_id == 4


def test_an_action_a_dead_wfdash_never_finished_is_reported(store: EventStore) -> None:
    plane = Plane()
    plane.release.set()
    runner = ActionRunner(plane, store, user="alice")
    finished(runner, runner.start(SCALE, lambda _: None).id)
    [started, _] = audit(store)
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    orphan = started.model_copy(
        update={
            "data": {**started.data, "action_id": "orphan", "pid": dead},
            "dedupe_key": "action:orphan:started",
        }
    )
    alive = started.model_copy(
        update={
            "data": {**started.data, "action_id": "alive", "pid": os.getpid()},
            "dedupe_key": "action:alive:started",
        }
    )
    store.record(orphan)
    store.record(alive)

    ActionRunner(plane, store, user="carol")
    ActionRunner(plane, store, user="carol")  # reported once
    interrupted = [e for e in audit(store) if e.data["phase"] == "interrupted"]
    assert [e.data["action_id"] for e in interrupted] == ["orphan"]
    assert interrupted[0].message == (
        f"ACTION {SCALE.summary} by alice: outcome unknown (wfdash stopped while it ran; "
        "check `sky serve status` / `sky status`)"
    )


def test_without_a_store_actions_still_run() -> None:
    plane = Plane()
    plane.release.set()
    runner = ActionRunner(plane, None)
    done = finished(runner, runner.start(SCALE, lambda _: None).id)
    assert done.state == "succeeded" and done.who
