"""Events from successive status snapshots: what changed between two polls.

SkyServe keeps no history: a preempted spot replica shows PREEMPTED only while its
teardown runs, then its row is deleted and the replacement gets a new, higher id. So
wfdash diffs each snapshot against the previous one (persisted across restarts by
:mod:`wfdash.collect.store`) and records what it sees as :class:`Event` objects.

Everything here is pure: no I/O, no clock (the caller passes ``now``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from wfdash.collect.kinds import EventKind, Layer, ReplicaStatus
from wfdash.collect.model import Replica, Service


class Event(BaseModel):
    """One thing that happened to a service or replica, as wfdash observed it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ts: float  # Unix time the change was observed (the poll), not when it happened
    service: str
    kind: EventKind
    replica_id: int | None = None
    message: str  # one human line, e.g. "PREEMPTED #8 aws us-east-1 r7a.4xlarge spot (up 2h13m)"
    data: dict[str, Any] = {}  # JSON-able details: old/new status, placement, reason ...
    # Identical keys are the same real-world event: the store keeps the first only.
    dedupe_key: str


INFERRED_NOTE = "(inferred: vanished without shutdown)"

# Fields a PREEMPTED row may have lost with its cluster; the last snapshot that had
# them still describes where the replica ran.
_PLACEMENT_FIELDS = ("cloud", "region", "infra", "resources", "instance_type", "launched_at")


def diff_snapshots(
    prev: Mapping[str, Service],
    curr: Sequence[Service],
    now: float,
    expected_removals: Collection[tuple[str, int]] = (),
    *,
    baseline: bool = False,
) -> list[Event]:
    """The events that turn snapshot ``prev`` (by service name) into ``curr``.

    ``prev`` is the last snapshot seen, which the caller persists (``EventStore``), so a
    restarted wfdash diffs against what it saw before it stopped. Only when there is
    no such snapshot at all (first run ever, or one written by an incompatible
    version) does the caller pass ``baseline=True``: ``prev`` is then ignored and the
    only events are PREEMPTED ones for replicas seen PREEMPTED, since SkyServe's rows
    are gone within a minute; no "added" flood for a fleet that was already running.

    ``expected_removals`` holds ``(service, replica_id)`` pairs wfdash itself asked to
    remove (terminate, scale down): their disappearance is not a preemption.

    A service that appears (or comes back with a new ``controller_job_id``: a new
    deployment, replica ids restarting at 1) is one SERVICE_ADDED event listing its
    replicas, plus PREEMPTED for rows already PREEMPTED; one that disappears is one
    SERVICE_REMOVED event, never preemptions of its replicas.

    Events are ordered by service name, then replica id (service-level events first).
    """
    events: list[Event] = []
    if baseline:
        for service in curr:
            events.extend(_seen_preempted(service, r, None, now) for r in _preempted(service))
        return _ordered(events)
    by_name = {service.name: service for service in curr}
    for name in sorted(prev.keys() | by_name.keys()):
        old, new = prev.get(name), by_name.get(name)
        if new is None:
            assert old is not None  # the name came from one of the two
            events.append(_service_removed(old, now))
        elif old is None or _is_new_deployment(old, new):
            if old is not None:
                events.append(_service_removed(old, now))
            events.append(_service_added(new, now))
            events.extend(_seen_preempted(new, r, None, now) for r in _preempted(new))
        else:
            events.extend(_diff_service(old, new, now, expected_removals))
    return _ordered(events)


def _ordered(events: list[Event]) -> list[Event]:
    # Stable: events of one replica (or the service) keep the order they were made in.
    return sorted(events, key=lambda e: (e.service, -1 if e.replica_id is None else e.replica_id))


def _is_new_deployment(old: Service, new: Service) -> bool:
    """A service of the same name, torn down and brought up again (ids restart at 1)."""
    return (
        old.controller_job_id is not None
        and new.controller_job_id is not None
        and old.controller_job_id != new.controller_job_id
    )


def _preempted(service: Service) -> list[Replica]:
    return [r for r in service.replicas if r.status is ReplicaStatus.PREEMPTED]


def _diff_service(
    old: Service, new: Service, now: float, expected_removals: Collection[tuple[str, int]]
) -> list[Event]:
    events: list[Event] = []
    if old.version is not None and new.version is not None and old.version != new.version:
        events.append(
            _event(
                new,
                EventKind.VERSION_CHANGED,
                now,
                f"VERSION v{old.version}→v{new.version}",
                {"old_version": old.version, "new_version": new.version},
                key=f"{old.version}->{new.version}",
            )
        )
    before = {r.replica_id: r for r in old.replicas}
    after = {r.replica_id: r for r in new.replicas}
    for replica_id in sorted(before.keys() | after.keys()):
        old_r, new_r = before.get(replica_id), after.get(replica_id)
        if old_r is None:
            assert new_r is not None
            events.append(_replica_added(new, new_r, now))
            if new_r.status is ReplicaStatus.PREEMPTED:
                events.append(_seen_preempted(new, new_r, None, now))
        elif new_r is None:
            events.append(_vanished(old, new, old_r, now, expected_removals))
        elif new_r.status is not old_r.status:
            if new_r.status is ReplicaStatus.PREEMPTED:
                events.append(_seen_preempted(new, new_r, old_r, now))
            else:
                events.append(_status_changed(new, old_r, new_r, now))
    return events


# --- service-level events -------------------------------------------------------------


def _service_added(service: Service, now: float) -> Event:
    facts = [f"job {service.controller_job_id}"] if service.controller_job_id is not None else []
    if service.version is not None:
        facts.append(f"v{service.version}")
    facts.append(_count(len(service.replicas), "replica"))
    return _event(
        service,
        EventKind.SERVICE_ADDED,
        now,
        f"SERVICE ADDED ({', '.join(facts)})",
        {"version": service.version, "replicas": _replica_summary(service)},
    )


def _service_removed(service: Service, now: float) -> Event:
    """The whole service is gone (``sky serve down``): its replicas went with it."""
    facts = [f"job {service.controller_job_id}"] if service.controller_job_id is not None else []
    facts.append(f"had {_count(len(service.replicas), 'replica')}")
    return _event(
        service,
        EventKind.SERVICE_REMOVED,
        now,
        f"SERVICE REMOVED ({', '.join(facts)})",
        {"version": service.version, "replicas": _replica_summary(service)},
    )


def _replica_summary(service: Service) -> list[dict[str, Any]]:
    return [{"replica_id": r.replica_id, "status": r.status.value} for r in service.replicas]


# --- replica-level events -------------------------------------------------------------


def _replica_added(service: Service, replica: Replica, now: float) -> Event:
    return _event(
        service,
        EventKind.REPLICA_ADDED,
        now,
        _line(f"ADDED #{replica.replica_id} {replica.status.value}", _where(replica)),
        {**_replica_data(replica), "status": replica.status.value},
        replica=replica,
    )


def _status_changed(service: Service, old: Replica, new: Replica, now: float) -> Event:
    return _event(
        service,
        EventKind.STATUS_CHANGED,
        now,
        _line(f"STATUS #{new.replica_id} {old.status.value}→{new.status.value}", _where(new)),
        {**_replica_data(new), "old_status": old.status.value, "new_status": new.status.value},
        replica=new,
        key=f"{old.status.value}->{new.status.value}",
    )


def _seen_preempted(service: Service, replica: Replica, was: Replica | None, now: float) -> Event:
    """SkyServe marked the replica PREEMPTED (its cluster is no longer up).

    SkyServe 0.14.1 also marks a non-spot replica PREEMPTED when its cluster was
    terminated externally (node failure); that is recorded too, without "spot".
    """
    known = _fill_placement(replica, was)
    return _preemption(
        service,
        known,
        now,
        _line(f"PREEMPTED #{replica.replica_id}", _where(known), _uptime(known, now)),
        {
            "detected": "status",
            "old_status": was.status.value if was is not None else None,
            "new_status": replica.status.value,
        },
    )


def _vanished(
    old: Service,
    new: Service,
    replica: Replica,
    now: float,
    expected_removals: Collection[tuple[str, int]],
) -> Event:
    """A replica's row is gone: an inferred preemption, or a removal with its reason."""
    reason = _removal_reason(old, new, replica, expected_removals)
    if reason is None:
        return _preemption(
            new,
            replica,
            now,
            _line(
                f"PREEMPTED #{replica.replica_id}",
                _where(replica),
                _uptime(replica, now),
                INFERRED_NOTE,
            ),
            {"detected": "vanished", "old_status": replica.status.value, "new_status": None},
        )
    return _event(
        new,
        EventKind.REPLICA_REMOVED,
        now,
        _line(f"REMOVED #{replica.replica_id}", _where(replica)) + f": {reason}",
        {**_replica_data(replica), "last_status": replica.status.value, "reason": reason},
        replica=replica,
    )


def _removal_reason(
    old: Service, new: Service, replica: Replica, expected_removals: Collection[tuple[str, int]]
) -> str | None:
    """Why a replica's row vanished, or None when it was most likely preempted.

    SkyServe shows SHUTTING_DOWN while it tears a replica down on purpose (scale-down,
    update, terminate), and PREEMPTED while it recycles a preempted one; a spot replica
    whose row disappears while it was still running was almost certainly preempted and
    cleaned up between two polls. Anything that explains the disappearance otherwise
    wins, and an unknown target (the controller call failed) gives no inference: a
    missed preemption is better than a made-up one.
    """
    status = replica.status
    if status is ReplicaStatus.PREEMPTED:
        return "preempted"
    if (new.name, replica.replica_id) in expected_removals:
        return "removed as requested"
    if status is ReplicaStatus.SHUTTING_DOWN:
        return "shut down"
    if status.is_failed:
        return f"cleaned up after {status.value}"
    before, after = old.target_num_replicas, new.target_num_replicas
    if before is not None and after is not None and after < before:
        return f"scale-down (target {before}→{after})"
    if not replica.is_spot:
        return "vanished without shutdown"
    if status is ReplicaStatus.PENDING:
        return "vanished before launch"  # no instance yet: nothing to preempt
    if before is None or after is None:
        return "vanished without shutdown (target unknown: maybe a scale-down)"
    return None


def _preemption(
    service: Service, replica: Replica, now: float, message: str, details: dict[str, Any]
) -> Event:
    """A PREEMPTED event, keyed the same whether seen as a status or inferred from a vanish.

    The key holds nothing a PREEMPTED row may lose (placement, launch time) and no
    timestamp, so a restarted wfdash seeing the same preemption again stores it once.
    """
    job = service.controller_job_id or 0
    data = {"controller_job_id": service.controller_job_id, **_replica_data(replica), **details}
    if replica.launched_at is not None:
        data["uptime_s"] = max(0.0, now - replica.launched_at)
    return Event(
        ts=now,
        service=service.name,
        kind=EventKind.PREEMPTED,
        replica_id=replica.replica_id,
        message=message,
        data=data,
        dedupe_key=f"preempted:{service.name}:{job}:{replica.replica_id}",
    )


# --- helpers --------------------------------------------------------------------------


def _event(
    service: Service,
    kind: EventKind,
    now: float,
    message: str,
    data: dict[str, Any],
    *,
    replica: Replica | None = None,
    key: str = "",
) -> Event:
    """An event keyed by what changed and when it was seen.

    Statuses can flip back and forth (READY→NOT_READY→READY), so the observation time
    is part of the key: each transition seen is its own event. The store commits the
    events together with the snapshot they were diffed into, so the same transition is
    never produced twice by a restart.
    """
    replica_id = replica.replica_id if replica is not None else None
    job = service.controller_job_id or 0
    parts = [kind.value, service.name, str(job)]
    if replica_id is not None:
        parts.append(str(replica_id))
    if key:
        parts.append(key)
    parts.append(f"{now:.6f}")
    return Event(
        ts=now,
        service=service.name,
        kind=kind,
        replica_id=replica_id,
        message=message,
        data={"controller_job_id": service.controller_job_id, **data},
        dedupe_key=":".join(parts),
    )


def _fill_placement(replica: Replica, earlier: Replica | None) -> Replica:
    """``replica`` with the placement its cluster lost taken from an earlier sighting."""
    if earlier is None:
        return replica
    update: dict[str, Any] = {
        field: getattr(earlier, field)
        for field in _PLACEMENT_FIELDS
        if getattr(replica, field) is None
    }
    if replica.layer is Layer.UNPLACED and earlier.layer is not Layer.UNPLACED:
        update.update(layer=earlier.layer, provider=earlier.provider, pool=earlier.pool)
    return replica.model_copy(update=update) if update else replica


def _replica_data(replica: Replica) -> dict[str, Any]:
    return {
        "cluster_name": replica.cluster_name,
        "version": replica.version,
        "is_spot": replica.is_spot,
        "layer": replica.layer.value,
        "provider": replica.provider,
        "cloud": replica.cloud,
        "region": replica.region,
        "instance_type": replica.instance_type,
        "launched_at": replica.launched_at,
    }


def _where(replica: Replica) -> str:
    """'aws us-east-1 r7a.4xlarge spot', 'ssh hetzner-base', or '' with no cluster."""
    parts: list[str] = []
    if replica.layer is Layer.BASE:
        parts.append(f"ssh {replica.pool}")
    elif replica.layer is Layer.BURST:
        provider = replica.provider if replica.provider != "other" else (replica.cloud or "")
        parts.extend(p for p in (provider.lower(), replica.region) if p)
    if replica.instance_type:
        parts.append(replica.instance_type)
    if replica.is_spot:
        parts.append("spot")
    return " ".join(parts)


def _uptime(replica: Replica, now: float) -> str:
    if replica.launched_at is None:
        return ""
    return f"(up {_format_duration(now - replica.launched_at)})"


def _format_duration(seconds: float) -> str:
    """'45s', '13m', '2h13m', '3d4h': two units at most, for one-line messages."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def _line(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
