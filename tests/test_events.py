"""diff_snapshots: events from successive SkyServe status snapshots."""

from __future__ import annotations

import json
from collections.abc import Collection

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.factories import T0, by_name, gone_cluster, service, spot_replica, ssh_replica
from wfdash.collect.events import INFERRED_NOTE, Event, diff_snapshots
from wfdash.collect.kinds import EventKind, ReplicaStatus
from wfdash.collect.model import Replica, Service

S = ReplicaStatus


def diff(
    prev: dict[str, Service],
    *curr: Service,
    now: float = T0,
    expected_removals: Collection[tuple[str, int]] = (),
    baseline: bool = False,
) -> list[Event]:
    events = diff_snapshots(prev, curr, now, expected_removals, baseline=baseline)
    for event in events:
        json.dumps(event.data)  # everything stored must be JSON-able
    assert len({e.dedupe_key for e in events}) == len(events)
    return events


def kinds(events: list[Event]) -> list[tuple[EventKind, int | None]]:
    return [(e.kind, e.replica_id) for e in events]


def only(events: list[Event], kind: EventKind) -> Event:
    matching = [e for e in events if e.kind is kind]
    assert len(matching) == 1, events
    return matching[0]


# --- preemptions ----------------------------------------------------------------------


def test_preempted_status_is_one_event_with_placement_from_prev() -> None:
    before = service(ssh_replica(1), spot_replica(8))
    after = service(ssh_replica(1), gone_cluster(spot_replica(8)))
    events = diff(by_name(before), after)
    assert kinds(events) == [(EventKind.PREEMPTED, 8)]
    event = events[0]
    # The PREEMPTED row lost cloud and launch time; the previous sighting had them.
    assert event.message == "PREEMPTED #8 aws us-east-1 r7a.4xlarge spot (up 2h13m)"
    assert event.data["detected"] == "status"
    assert event.data["old_status"] == "READY"
    assert event.data["new_status"] == "PREEMPTED"
    assert event.data["cloud"] == "AWS"
    assert event.data["uptime_s"] == 2 * 3600 + 13 * 60
    assert event.dedupe_key == "preempted:bitnet:1:8"


def test_preempted_then_vanished_is_still_one_preemption() -> None:
    ready = service(spot_replica(7, cloud="GCP"), spot_replica(8))
    preempted = service(spot_replica(7, cloud="GCP"), gone_cluster(spot_replica(8)))
    replaced = service(spot_replica(7, cloud="GCP"), spot_replica(9, S.PENDING))
    first = diff(by_name(ready), preempted, now=T0)
    second = diff(by_name(preempted), replaced, now=T0 + 5)
    all_events = first + second
    assert [e.kind for e in all_events].count(EventKind.PREEMPTED) == 1
    assert kinds(second) == [(EventKind.REPLICA_REMOVED, 8), (EventKind.REPLICA_ADDED, 9)]
    assert second[0].data["reason"] == "preempted"
    assert second[0].message == "REMOVED #8 spot: preempted"


def test_spot_replica_vanished_from_ready_is_an_inferred_preemption() -> None:
    before = service(ssh_replica(1), spot_replica(8))
    after = service(ssh_replica(1), spot_replica(9, S.PROVISIONING), target=2)
    events = diff(by_name(before), after)
    assert kinds(events) == [(EventKind.PREEMPTED, 8), (EventKind.REPLICA_ADDED, 9)]
    event = events[0]
    where = "aws us-east-1 r7a.4xlarge spot"
    assert event.message == f"PREEMPTED #8 {where} (up 2h13m) {INFERRED_NOTE}"
    assert event.data["detected"] == "vanished"
    assert event.data["old_status"] == "READY"


def test_both_detection_paths_share_the_dedupe_key() -> None:
    ready = service(spot_replica(8))
    seen = only(diff(by_name(ready), service(gone_cluster(spot_replica(8)))), EventKind.PREEMPTED)
    inferred = only(diff(by_name(ready), service(target=1), now=T0 + 30), EventKind.PREEMPTED)
    assert seen.dedupe_key == inferred.dedupe_key


def test_vanished_after_shutting_down_is_a_removal() -> None:
    before = service(spot_replica(8, S.SHUTTING_DOWN))
    events = diff(by_name(before), service(target=1))
    assert kinds(events) == [(EventKind.REPLICA_REMOVED, 8)]
    assert events[0].data["reason"] == "shut down"


def test_vanished_after_failure_is_a_removal() -> None:
    before = service(spot_replica(8, S.FAILED_PROBING))
    events = diff(by_name(before), service(target=1))
    assert kinds(events) == [(EventKind.REPLICA_REMOVED, 8)]
    assert events[0].data["reason"] == "cleaned up after FAILED_PROBING"


def test_vanished_non_spot_replica_is_a_removal() -> None:
    before = service(ssh_replica(1), ssh_replica(2))
    events = diff(by_name(before), service(ssh_replica(1), target=2))
    assert kinds(events) == [(EventKind.REPLICA_REMOVED, 2)]
    assert events[0].message == "REMOVED #2 ssh hetzner-base: vanished without shutdown"
    assert events[0].data["layer"] == "base"
    assert events[0].data["provider"] == "hetzner-base"


def test_expected_removal_is_not_a_preemption() -> None:
    before = service(ssh_replica(1), spot_replica(8))
    after = service(ssh_replica(1))  # target unchanged: only the request explains it
    events = diff(by_name(before), after, expected_removals={("bitnet", 8)})
    assert kinds(events) == [(EventKind.REPLICA_REMOVED, 8)]
    assert events[0].data["reason"] == "removed as requested"


def test_target_drop_is_a_scale_down() -> None:
    before = service(ssh_replica(1), spot_replica(7, cloud="GCP"), spot_replica(8), target=3)
    after = service(ssh_replica(1), spot_replica(7, cloud="GCP"), target=2)
    events = diff(by_name(before), after)
    assert kinds(events) == [(EventKind.REPLICA_REMOVED, 8)]
    assert events[0].data["reason"] == "scale-down (target 3→2)"


def test_unknown_target_gives_no_inference() -> None:
    before = service(spot_replica(8), target=None)
    events = diff(by_name(before), service(target=None))
    assert kinds(events) == [(EventKind.REPLICA_REMOVED, 8)]
    assert "target unknown" in events[0].data["reason"]


def test_pending_spot_replica_cannot_be_preempted() -> None:
    before = service(spot_replica(8, S.PENDING, launched_at=None, cloud="GCP"))
    events = diff(by_name(before), service(target=1))
    assert kinds(events) == [(EventKind.REPLICA_REMOVED, 8)]
    assert events[0].data["reason"] == "vanished before launch"


def test_non_spot_replica_seen_preempted_is_recorded_without_spot() -> None:
    # SkyServe 0.14.1 marks a cluster terminated from outside PREEMPTED, spot or not.
    before = service(ssh_replica(1))
    events = diff(by_name(before), service(gone_cluster(ssh_replica(1))))
    event = only(events, EventKind.PREEMPTED)
    assert event.message == "PREEMPTED #1 ssh hetzner-base (up 1d0h)"
    assert event.data["is_spot"] is False


# --- services -------------------------------------------------------------------------


def test_whole_service_gone_is_one_removal_and_no_preemption() -> None:
    before = service(ssh_replica(1), spot_replica(8))
    events = diff(by_name(before))
    assert kinds(events) == [(EventKind.SERVICE_REMOVED, None)]
    assert events[0].message == "SERVICE REMOVED (job 1, had 2 replicas)"
    assert events[0].data["replicas"] == [
        {"replica_id": 1, "status": "READY"},
        {"replica_id": 8, "status": "READY"},
    ]


def test_new_controller_job_is_a_new_service() -> None:
    before = service(ssh_replica(1), spot_replica(8), job=3)
    # Torn down and up again between two polls: ids restart at 1.
    after = service(ssh_replica(1, S.STARTING), gone_cluster(spot_replica(2)), job=4)
    events = diff(by_name(before), after)
    assert kinds(events) == [
        (EventKind.SERVICE_REMOVED, None),
        (EventKind.SERVICE_ADDED, None),
        (EventKind.PREEMPTED, 2),
    ]
    assert events[0].data["controller_job_id"] == 3
    assert events[1].data["controller_job_id"] == 4
    assert events[1].message == "SERVICE ADDED (job 4, v1, 2 replicas)"
    assert events[2].dedupe_key == "preempted:bitnet:4:2"


def test_unknown_job_id_is_not_a_new_service() -> None:
    before = service(ssh_replica(1), job=3)
    after = service(ssh_replica(1), job=None)
    assert diff(by_name(before), after) == []


def test_version_change() -> None:
    before = service(ssh_replica(1), version=2)
    after = service(ssh_replica(1), spot_replica(2, S.PENDING, version=3), version=3)
    events = diff(by_name(before), after)
    assert kinds(events) == [(EventKind.VERSION_CHANGED, None), (EventKind.REPLICA_ADDED, 2)]
    assert events[0].message == "VERSION v2→v3"
    assert events[0].data == {"controller_job_id": 1, "old_version": 2, "new_version": 3}


def test_status_changes_are_distinct_events_each_time() -> None:
    ready = service(spot_replica(7, cloud="GCP"))
    not_ready = service(spot_replica(7, S.NOT_READY, cloud="GCP"))
    flips = [
        diff(by_name(ready), not_ready, now=T0),
        diff(by_name(not_ready), ready, now=T0 + 10),
        diff(by_name(ready), not_ready, now=T0 + 20),
    ]
    keys = {e.dedupe_key for events in flips for e in events}
    assert len(keys) == 3
    first = flips[0][0]
    assert first.kind is EventKind.STATUS_CHANGED
    assert first.message == "STATUS #7 READY→NOT_READY gcp us-central1 c3d-standard-16 spot"
    assert (first.data["old_status"], first.data["new_status"]) == ("READY", "NOT_READY")


def test_no_change_no_events() -> None:
    snapshot = service(ssh_replica(1), spot_replica(8))
    assert diff(by_name(snapshot), snapshot) == []


# --- first run ------------------------------------------------------------------------


def test_baseline_records_only_rows_seen_preempted() -> None:
    fleet = service(ssh_replica(1), spot_replica(7), gone_cluster(spot_replica(8)))
    other = service(ssh_replica(1), name="vllm")
    events = diff({}, fleet, other, baseline=True)
    assert kinds(events) == [(EventKind.PREEMPTED, 8)]
    # No earlier sighting: the message says what is left.
    assert events[0].message == "PREEMPTED #8 spot"
    assert events[0].dedupe_key == "preempted:bitnet:1:8"


def test_baseline_ignores_prev() -> None:
    stale = service(spot_replica(5))
    assert diff(by_name(stale), service(ssh_replica(1)), baseline=True) == []


def test_empty_prev_after_a_run_reports_new_services() -> None:
    # The store had a snapshot with no services: a service that appears is news.
    events = diff({}, service(ssh_replica(1, S.PENDING)))
    assert kinds(events) == [(EventKind.SERVICE_ADDED, None)]


# --- ordering -------------------------------------------------------------------------


def test_events_are_ordered_by_service_then_replica() -> None:
    prev = by_name(
        service(spot_replica(3), spot_replica(9), name="zeta", target=2),
        service(ssh_replica(1), name="alpha", version=1),
    )
    curr = [
        service(spot_replica(3, S.NOT_READY), spot_replica(11, S.PENDING), name="zeta", target=2),
        service(ssh_replica(1, S.NOT_READY), ssh_replica(2), name="alpha", version=2),
    ]
    events = diff(prev, *curr)
    assert [(e.service, e.kind, e.replica_id) for e in events] == [
        ("alpha", EventKind.VERSION_CHANGED, None),
        ("alpha", EventKind.STATUS_CHANGED, 1),
        ("alpha", EventKind.REPLICA_ADDED, 2),
        ("zeta", EventKind.STATUS_CHANGED, 3),
        ("zeta", EventKind.PREEMPTED, 9),
        ("zeta", EventKind.REPLICA_ADDED, 11),
    ]
    assert diff_snapshots(prev, list(reversed(curr)), T0) == events


# --- properties -----------------------------------------------------------------------


@st.composite
def _histories(draw: st.DrawFn) -> list[Service]:
    """Successive snapshots of one service as SkyServe could report them: replicas change
    status or vanish, new ones get ids never used before, the target moves."""
    snapshots: list[Service] = []
    replicas: dict[int, Replica] = {}
    next_id = 1
    for _ in range(draw(st.integers(2, 6))):
        for replica_id in sorted(replicas):
            action = draw(st.sampled_from(["keep", "status", "vanish"]))
            if action == "vanish":
                del replicas[replica_id]
            elif action == "status":
                status = draw(st.sampled_from(list(ReplicaStatus)))
                replicas[replica_id] = replicas[replica_id].model_copy(update={"status": status})
        for _ in range(draw(st.integers(0, 2))):
            build = spot_replica if draw(st.booleans()) else ssh_replica
            replicas[next_id] = build(next_id, draw(st.sampled_from(list(ReplicaStatus))))
            next_id += 1
        target = draw(st.sampled_from([None, 1, 2, 3]))
        snapshots.append(service(*replicas.values(), target=target))
    return snapshots


@settings(derandomize=True, max_examples=150, database=None)
@given(history=_histories(), baseline=st.booleans())
def test_a_replica_is_preempted_at_most_once_along_a_history(
    history: list[Service], baseline: bool
) -> None:
    events: list[Event] = []
    prev: dict[str, Service] = {}
    for step, snapshot in enumerate(history):
        cycle = diff_snapshots(prev, [snapshot], T0 + step, baseline=baseline and step == 0)
        order = [-1 if e.replica_id is None else e.replica_id for e in cycle]
        assert order == sorted(order)
        events.extend(cycle)
        prev = by_name(snapshot)
    keys = [e.dedupe_key for e in events]
    assert len(keys) == len(set(keys))
    preempted = [e.replica_id for e in events if e.kind is EventKind.PREEMPTED]
    assert len(preempted) == len(set(preempted))
