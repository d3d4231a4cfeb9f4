"""The domain model every screen renders: services, replicas, their layer and health.

Records from SkyServe (real or sandbox) are mapped into these immutable pydantic models
by :mod:`wfdash.collect.mapping`; nothing downstream reads raw status dicts.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from wfdash.collect.kinds import Health, Layer, ReplicaStatus, ServiceStatus

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class ReplicaPolicy(BaseModel):
    """The autoscaling policy; ``None`` fields are unknown, not zero."""

    model_config = _FROZEN

    text: str = ""
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_qps_per_replica: float | None = None
    num_overprovision: int | None = None
    upscale_delay_seconds: float | None = None
    downscale_delay_seconds: float | None = None
    base_ondemand_fallback_replicas: int | None = None
    dynamic_ondemand_fallback: bool | None = None

    @property
    def is_autoscaling(self) -> bool:
        return (
            self.max_replicas is not None
            and self.min_replicas is not None
            and self.max_replicas != self.min_replicas
        )


class Replica(BaseModel):
    """One SkyServe replica, classified into a layer and a provider."""

    model_config = _FROZEN

    replica_id: int
    cluster_name: str
    status: ReplicaStatus
    status_detail: str | None = None
    version: int | None = None
    endpoint: str | None = None
    is_spot: bool = False
    launched_at: float | None = None  # Unix time the cluster was launched
    cloud: str | None = None  # as SkyPilot writes it: 'GCP', 'AWS', 'SSH', 'RunPod'
    region: str | None = None  # 'us-central1', or 'ssh-<pool>' for SSH node pools
    infra: str | None = None  # 'GCP (us-central1-a)', 'SSH (hetzner-base)'
    resources: str | None = None  # SkyPilot's resources string, e.g. '1x[spot](cpus=16, ...)'
    instance_type: str | None = None
    layer: Layer = Layer.UNPLACED
    provider: str = "other"  # 'aws', 'gcp', 'runpod', 'other', or the SSH pool name
    pool: str | None = None  # SSH node pool name for base-layer replicas

    @property
    def key(self) -> str:
        """Stable identity across polls: SkyServe never reuses a replica id in a service."""
        return f"{self.cluster_name}#{self.replica_id}"


class Service(BaseModel):
    """One SkyServe service with its replicas and wfdash's own health verdict."""

    model_config = _FROZEN

    name: str
    # Distinguishes a service from an earlier one of the same name (replica ids restart).
    controller_job_id: int | None = None
    status: ServiceStatus = ServiceStatus.UNKNOWN
    endpoint: str | None = None
    version: int | None = None
    active_versions: tuple[int, ...] = ()
    policy: ReplicaPolicy = ReplicaPolicy()
    target_num_replicas: int | None = None
    uptime_since: float | None = None  # Unix time of the first READY probe
    load_balancing_policy: str | None = None
    tls_encrypted: bool = False
    requested_resources: str | None = None
    envs: dict[str, str] = {}  # from the task YAML, secret-looking values masked
    yaml_redacted: str | None = None  # the task YAML with secrets masked, for diffs
    replicas: tuple[Replica, ...] = ()
    health: Health = Health.UNKNOWN
    health_reason: str = ""

    @property
    def ready_count(self) -> int:
        return sum(1 for r in self.replicas if r.status is ReplicaStatus.READY)

    @property
    def backend(self) -> str | None:
        return self.envs.get("BACKEND")


class Cluster(BaseModel):
    """A standalone inference cluster (``sky launch skypilot/inference/gcp_c3d.yaml``)."""

    model_config = _FROZEN

    name: str
    status: str = "UNKNOWN"  # SkyPilot's ClusterStatus: INIT, UP, STOPPED
    launched_at: float | None = None
    cloud: str | None = None
    region: str | None = None
    resources: str | None = None
    instance_type: str | None = None
    provider: str = "other"
    endpoint: str | None = None  # the server port's URL, when wfdash could learn it
    last_event: str | None = None  # e.g. "Running setup: building BitNet.cpp (cache miss)"
    envs: dict[str, str] = {}  # from the launch YAML, secret-looking values masked

    @property
    def key(self) -> str:
        return f"cluster:{self.name}"

    @property
    def backend(self) -> str | None:
        return self.envs.get("BACKEND")

    @property
    def cache_version(self) -> str | None:
        return self.envs.get("CACHE_VERSION")
