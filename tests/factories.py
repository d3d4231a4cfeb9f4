"""Small builders for domain-model objects, shaped like SkyServe 0.14 status rows.

Base-layer replicas sit on the Hetzner SSH node pool; burst replicas are AWS/GCP spot.
"""

from __future__ import annotations

from types import EllipsisType
from typing import Any

from wfdash.collect.kinds import Layer, ReplicaStatus
from wfdash.collect.model import Replica, Service

T0 = 1_700_000_000.0  # a fixed "now" so tests never read the clock
POOL = "hetzner-base"
_BURST_PLACES = {"AWS": ("us-east-1", "r7a.4xlarge"), "GCP": ("us-central1", "c3d-standard-16")}


def ssh_replica(
    replica_id: int, status: ReplicaStatus = ReplicaStatus.READY, **fields: Any
) -> Replica:
    """A base-layer replica on the SSH node pool (never spot)."""
    values: dict[str, Any] = {
        "replica_id": replica_id,
        "cluster_name": f"bitnet-{replica_id}",
        "status": status,
        "version": 1,
        "is_spot": False,
        "launched_at": T0 - 86_400,
        "cloud": "SSH",
        "region": f"ssh-{POOL}",
        "infra": f"SSH ({POOL})",
        "instance_type": None,
        "layer": Layer.BASE,
        "provider": POOL,
        "pool": POOL,
    }
    values.update(fields)
    return Replica(**values)


def spot_replica(
    replica_id: int,
    status: ReplicaStatus = ReplicaStatus.READY,
    *,
    cloud: str = "AWS",
    **fields: Any,
) -> Replica:
    """A burst-layer spot replica: AWS us-east-1 r7a.4xlarge, or GCP us-central1 c3d."""
    region, instance = _BURST_PLACES[cloud]
    values: dict[str, Any] = {
        "replica_id": replica_id,
        "cluster_name": f"bitnet-{replica_id}",
        "status": status,
        "version": 1,
        "is_spot": True,
        "launched_at": T0 - (2 * 3600 + 13 * 60),
        "cloud": cloud,
        "region": region,
        "infra": f"{cloud} ({region})",
        "instance_type": instance,
        "layer": Layer.BURST,
        "provider": cloud.lower(),
    }
    values.update(fields)
    return Replica(**values)


def gone_cluster(replica: Replica, status: ReplicaStatus = ReplicaStatus.PREEMPTED) -> Replica:
    """The row SkyServe shows while a preempted replica's cluster is torn down."""
    return replica.model_copy(
        update={
            "status": status,
            "launched_at": None,
            "cloud": None,
            "region": None,
            "infra": None,
            "instance_type": None,
            "endpoint": None,
            "layer": Layer.UNPLACED,
            "provider": "other",
            "pool": None,
        }
    )


def service(
    *replicas: Replica,
    name: str = "bitnet",
    job: int | None = 1,
    version: int = 1,
    target: int | EllipsisType | None = ...,
    **fields: Any,
) -> Service:
    """A service holding ``replicas``; the target defaults to their number (None: unknown)."""
    return Service(
        name=name,
        controller_job_id=job,
        version=version,
        target_num_replicas=len(replicas) if target is ... else target,
        replicas=tuple(sorted(replicas, key=lambda r: r.replica_id)),
        **fields,
    )


def by_name(*services: Service) -> dict[str, Service]:
    return {s.name: s for s in services}
