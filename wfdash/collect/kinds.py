"""The vocabulary of the domain model: statuses, layers, health, event kinds, scrape errors.

Plain enums, apart from the pydantic models in :mod:`wfdash.collect.model` and
:mod:`wfdash.collect.events` that use them: the dashboard needs these names to paint its
first frame, and building pydantic models costs more start-up time than that frame may.
"""

from __future__ import annotations

from enum import StrEnum


class ReplicaStatus(StrEnum):
    """SkyServe 0.14 ``ReplicaStatus`` values, plus nothing of our own."""

    PENDING = "PENDING"
    PROVISIONING = "PROVISIONING"
    STARTING = "STARTING"
    READY = "READY"
    NOT_READY = "NOT_READY"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    FAILED = "FAILED"
    FAILED_INITIAL_DELAY = "FAILED_INITIAL_DELAY"
    FAILED_PROBING = "FAILED_PROBING"
    FAILED_PROVISION = "FAILED_PROVISION"
    FAILED_CLEANUP = "FAILED_CLEANUP"
    PREEMPTED = "PREEMPTED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_failed(self) -> bool:
        return self.value.startswith("FAILED")

    @property
    def is_launching(self) -> bool:
        return self in _LAUNCHING


_LAUNCHING = frozenset({ReplicaStatus.PENDING, ReplicaStatus.PROVISIONING, ReplicaStatus.STARTING})


class ServiceStatus(StrEnum):
    """SkyServe 0.14 ``ServiceStatus`` values (what the controller reports, not health)."""

    CONTROLLER_INIT = "CONTROLLER_INIT"
    REPLICA_INIT = "REPLICA_INIT"
    CONTROLLER_FAILED = "CONTROLLER_FAILED"
    READY = "READY"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    FAILED = "FAILED"
    FAILED_CLEANUP = "FAILED_CLEANUP"
    NO_REPLICA = "NO_REPLICA"
    UNKNOWN = "UNKNOWN"


class Layer(StrEnum):
    """Where a replica sits in the spillover design."""

    BASE = "base"  # fixed-cost SSH node pool (Hetzner dedicated servers)
    BURST = "burst"  # pay-per-use cloud capacity (spot or on-demand)
    UNPLACED = "-"  # no cluster yet (PENDING) or already gone


class Health(StrEnum):
    """Service health as wfdash derives it from the replicas (see :func:`derive_health`)."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"
    STARTING = "starting"
    SHUTTING_DOWN = "shutting-down"
    FAILED = "failed"
    UNKNOWN = "unknown"


class EventKind(StrEnum):
    SERVICE_ADDED = "service_added"
    SERVICE_REMOVED = "service_removed"
    VERSION_CHANGED = "version_changed"
    REPLICA_ADDED = "replica_added"
    STATUS_CHANGED = "status_changed"
    REPLICA_REMOVED = "replica_removed"
    PREEMPTED = "preempted"
    ACTION = "action"  # audit log entries written by the control module


class ScrapeError(StrEnum):
    """Why the last scrape of a server's /metrics failed."""

    TIMEOUT = "timeout"
    REFUSED = "refused"
    HTTP = "http"
    TOO_LARGE = "too-large"
    UNPARSABLE = "unparsable"
    NETWORK = "network"
    NO_ENDPOINT = "no-endpoint"
