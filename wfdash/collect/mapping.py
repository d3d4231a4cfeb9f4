"""SkyServe 0.14 ``serve.status`` records → the domain model.

One function reads both the real SkyPilot SDK's records (statuses as enums) and the
sandbox's (statuses as strings); every optional key may be missing or None. Anything
that cannot be understood degrades to "unknown", never to an exception.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import yaml

from wfdash.collect.kinds import Health, Layer, ReplicaStatus, ServiceStatus
from wfdash.collect.model import Cluster, Replica, ReplicaPolicy, Service
from wfdash.collect.redact import mask_value, redact_yaml

_KNOWN_CLOUDS = {"aws": "aws", "gcp": "gcp", "runpod": "runpod"}

_FIXED_POLICY = re.compile(r"^Fixed (\d+) (?:replica|worker)s?")
_AUTOSCALING_POLICY = re.compile(
    r"^Autoscaling from (\d+) to (\d+) (?:replica|worker)s?"
    r"(?: with (\d+) overprovisioned replicas)?"
    r"(?: \(target QPS per (?:replica|worker): ([0-9.eE+-]+)\))?"
)
# Inside SkyPilot's resources string, e.g. '1x[spot](cpus=16, mem=64, c3d-standard-16, ...)'.
_RESOURCES_BODY = re.compile(r"\(([^()]*)\)\s*$")


def _enum_value(raw: object) -> str:
    """'READY' from a ReplicaStatus enum, a plain string, or 'ReplicaStatus.READY'."""
    if isinstance(raw, enum.Enum):
        raw = raw.value
    text = str(raw) if raw is not None else ""
    return text.rsplit(".", 1)[-1].strip().upper()


def replica_status(raw: object) -> ReplicaStatus:
    try:
        return ReplicaStatus(_enum_value(raw))
    except ValueError:
        return ReplicaStatus.UNKNOWN


def service_status(raw: object) -> ServiceStatus:
    try:
        return ServiceStatus(_enum_value(raw))
    except ValueError:
        return ServiceStatus.UNKNOWN


def _opt_int(raw: object) -> int | None:
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() else None
    try:
        return int(str(raw).strip())
    except ValueError:
        return None


def _opt_float(raw: object) -> float | None:
    if isinstance(raw, bool) or raw is None:
        return None
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value  # NaN is unknown


def _opt_str(raw: object) -> str | None:
    if raw is None:
        return None
    text = str(raw).strip()
    return text or None


def classify_placement(
    cloud: str | None, region: str | None, infra: str | None
) -> tuple[Layer, str, str | None]:
    """(layer, provider, SSH pool) for a replica's cloud/region/infra strings.

    SSH node pools are the fixed-cost base layer: SkyPilot writes ``cloud='SSH'``,
    ``region='ssh-<pool>'`` and ``infra='SSH (<pool>)'``. Everything else with a
    cloud is burst capacity. No cloud at all means no cluster yet.
    """
    cloud_key = (cloud or "").strip().lower()
    infra_text = (infra or "").strip()
    if not cloud_key and infra_text and infra_text != "-":
        cloud_key = infra_text.split(" ", 1)[0].split("/", 1)[0].lower()
    if cloud_key == "ssh":
        pool = None
        if region and region.startswith("ssh-"):
            pool = region[len("ssh-") :]
        elif infra_text.startswith("SSH (") and infra_text.endswith(")"):
            pool = infra_text[len("SSH (") : -1]
        elif "/" in infra_text:
            pool = infra_text.split("/", 1)[1]
        pool = pool or "ssh"
        return Layer.BASE, pool, pool
    if not cloud_key:
        return Layer.UNPLACED, "other", None
    return Layer.BURST, _KNOWN_CLOUDS.get(cloud_key, "other"), None


def instance_type_from_resources(resources: str | None) -> str | None:
    """The instance type inside SkyPilot's resources string, where it shows one.

    The elements are ``gpus=..``, ``cpus=..``, ``mem=..``, then the instance type
    (absent on Kubernetes), then ``...`` or ``disk=..`` and friends.
    """
    if not resources:
        return None
    match = _RESOURCES_BODY.search(resources)
    if match is None:
        return None
    for element in (part.strip() for part in match.group(1).split(",")):
        if element and element != "..." and "=" not in element:
            return element
    return None


def parse_policy_text(text: str | None) -> ReplicaPolicy:
    """Parse SkyServe's ``policy`` text ('Fixed 3 replicas', 'Autoscaling from 1 to 3 …')."""
    text = (text or "").strip()
    fixed = _FIXED_POLICY.match(text)
    if fixed:
        count = int(fixed.group(1))
        return ReplicaPolicy(text=text, min_replicas=count, max_replicas=count)
    auto = _AUTOSCALING_POLICY.match(text)
    if auto:
        return ReplicaPolicy(
            text=text,
            min_replicas=int(auto.group(1)),
            max_replicas=int(auto.group(2)),
            num_overprovision=_opt_int(auto.group(3)),
            target_qps_per_replica=_opt_float(auto.group(4)),
        )
    return ReplicaPolicy(text=text)


def _policy_from_yaml(text: str, tree: Mapping[str, Any] | None) -> ReplicaPolicy:
    """The policy from the task YAML where it has one (exact), else from the text."""
    from_text = parse_policy_text(text)
    service = tree.get("service") if tree else None
    if not isinstance(service, Mapping):
        return from_text
    policy = service.get("replica_policy")
    if not isinstance(policy, Mapping):
        fixed = _opt_int(service.get("replicas"))
        if fixed is None:
            return from_text
        return ReplicaPolicy(text=from_text.text, min_replicas=fixed, max_replicas=fixed)
    min_replicas = _opt_int(policy.get("min_replicas"))
    max_replicas = _opt_int(policy.get("max_replicas"))
    fallback = policy.get("dynamic_ondemand_fallback")
    return ReplicaPolicy(
        text=from_text.text,
        min_replicas=min_replicas,
        max_replicas=max_replicas if max_replicas is not None else min_replicas,
        target_qps_per_replica=_opt_float(policy.get("target_qps_per_replica")),
        num_overprovision=_opt_int(policy.get("num_overprovision")),
        upscale_delay_seconds=_opt_float(policy.get("upscale_delay_seconds")),
        downscale_delay_seconds=_opt_float(policy.get("downscale_delay_seconds")),
        base_ondemand_fallback_replicas=_opt_int(policy.get("base_ondemand_fallback_replicas")),
        dynamic_ondemand_fallback=fallback if isinstance(fallback, bool) else None,
    )


def _envs(tree: Mapping[str, Any] | None) -> dict[str, str]:
    envs = tree.get("envs") if tree else None
    if not isinstance(envs, Mapping):
        return {}
    return {str(k): mask_value(str(k), v) for k, v in envs.items()}


def map_replica(record: Mapping[str, Any]) -> Replica | None:
    """One replica dict → Replica, or None when it has no usable id."""
    replica_id = _opt_int(record.get("replica_id"))
    if replica_id is None:
        return None
    cloud = _opt_str(record.get("cloud"))
    region = _opt_str(record.get("region"))
    infra = _opt_str(record.get("infra"))
    layer, provider, pool = classify_placement(cloud, region, infra)
    resources_full = _opt_str(record.get("resources_str_full"))
    resources = _opt_str(record.get("resources_str")) or resources_full
    is_spot = record.get("is_spot")
    return Replica(
        replica_id=replica_id,
        cluster_name=_opt_str(record.get("name")) or f"replica-{replica_id}",
        status=replica_status(record.get("status")),
        status_detail=_opt_str(record.get("status_detail")),
        version=_opt_int(record.get("version")),
        endpoint=_opt_str(record.get("endpoint")),
        is_spot=bool(is_spot) if isinstance(is_spot, bool | int) else False,
        launched_at=_opt_float(record.get("launched_at")),
        cloud=cloud,
        region=region,
        infra=infra,
        resources=resources,
        instance_type=instance_type_from_resources(resources_full or resources),
        layer=layer,
        provider=provider,
        pool=pool,
    )


def derive_health(
    status: ServiceStatus, replicas: Iterable[Replica], target: int | None, policy: ReplicaPolicy
) -> tuple[Health, str]:
    """wfdash's verdict on a service, from its replicas.

    SkyServe 0.14.1 computes the service status from READY replicas only (so it reads
    READY or NO_REPLICA in practice); the replicas tell the real story.
    """
    if status is ServiceStatus.SHUTTING_DOWN:
        return Health.SHUTTING_DOWN, "service is shutting down"
    if status in (
        ServiceStatus.CONTROLLER_FAILED,
        ServiceStatus.FAILED,
        ServiceStatus.FAILED_CLEANUP,
    ):
        return Health.FAILED, f"controller reports {status.value}"
    replicas = list(replicas)
    ready = sum(1 for r in replicas if r.status is ReplicaStatus.READY)
    launching = sum(1 for r in replicas if r.status.is_launching)
    failed = [r for r in replicas if r.status.is_failed]
    troubled = [
        r for r in replicas if r.status in (ReplicaStatus.NOT_READY, ReplicaStatus.PREEMPTED)
    ]
    wanted = target if target is not None else policy.min_replicas
    if status is ServiceStatus.CONTROLLER_INIT:
        return Health.STARTING, "controller starting"
    if ready == 0:
        if wanted == 0 and not failed:
            return Health.HEALTHY, "scaled to zero"
        if launching and not failed:
            return Health.STARTING, f"0 ready, {launching} launching"
        return Health.DOWN, f"0 ready of {wanted if wanted is not None else len(replicas)}"
    problems: list[str] = []
    if wanted is not None and ready < wanted:
        problems.append(f"{ready}/{wanted} ready")
    if failed:
        problems.append(f"{len(failed)} failed")
    for state in (ReplicaStatus.NOT_READY, ReplicaStatus.PREEMPTED):
        count = sum(1 for r in troubled if r.status is state)
        if count:
            problems.append(f"{count} {state.value.lower().replace('_', ' ')}")
    if problems:
        return Health.DEGRADED, ", ".join(problems)
    return Health.HEALTHY, f"{ready} ready"


@lru_cache(maxsize=256)
def _redact_task(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """``redact_yaml`` of a task YAML SkyPilot stored, without ``_user_specified_yaml``.

    SkyPilot's ``task.to_yaml_config()`` (what ``yaml_content`` holds) carries the user's
    original file verbatim in that key, comments and any secret typed into it included,
    as one string that value-based masking cannot see into.

    Cached (the tree is shared: read it, never change it): a service's YAML is the same at
    every status read until it is updated, and parsing and dumping it again was most of
    the CPU of mapping a status.
    """
    if "_user_specified_yaml" not in text:
        return redact_yaml(text)
    tree, _ = redact_yaml(text)
    if tree is None:
        return None, None
    tree.pop("_user_specified_yaml", None)
    return tree, yaml.safe_dump(tree, sort_keys=False, default_flow_style=False)


def map_service(record: Mapping[str, Any]) -> Service | None:
    """One service dict → Service (secrets masked), or None without a name."""
    name = _opt_str(record.get("name"))
    if name is None:
        return None
    yaml_text = record.get("yaml_content")
    tree, yaml_redacted = _redact_task(yaml_text) if isinstance(yaml_text, str) else (None, None)
    policy = _policy_from_yaml(str(record.get("policy") or ""), tree)
    raw_replicas = record.get("replica_info")
    replicas = sorted(
        (
            replica
            for replica in (
                map_replica(r)
                for r in (raw_replicas if isinstance(raw_replicas, list) else ())
                if isinstance(r, Mapping)
            )
            if replica is not None
        ),
        key=lambda r: r.replica_id,
    )
    status = service_status(record.get("status"))
    target = _opt_int(record.get("target_num_replicas"))
    health, reason = derive_health(status, replicas, target, policy)
    active = record.get("active_versions")
    active_versions = tuple(
        v
        for v in (_opt_int(x) for x in (active if isinstance(active, list | tuple) else ()))
        if v is not None
    )
    return Service(
        name=name,
        controller_job_id=_opt_int(record.get("controller_job_id")),
        status=status,
        endpoint=_opt_str(record.get("endpoint")),
        version=_opt_int(record.get("version")),
        active_versions=active_versions,
        policy=policy,
        target_num_replicas=target,
        uptime_since=_opt_float(record.get("uptime")),
        load_balancing_policy=_opt_str(record.get("load_balancing_policy")),
        tls_encrypted=bool(record.get("tls_encrypted")),
        requested_resources=_opt_str(record.get("requested_resources_str")),
        envs=_envs(tree),
        yaml_redacted=yaml_redacted,
        replicas=tuple(replicas),
        health=health,
        health_reason=reason,
    )


def map_services(records: object) -> list[Service]:
    """All service records → Services, skipping what is not a service at all."""
    if not isinstance(records, list | tuple):
        return []
    services = (map_service(r) for r in records if isinstance(r, Mapping))
    return sorted((s for s in services if s is not None), key=lambda s: s.name)


def map_cluster(record: Mapping[str, Any]) -> Cluster | None:
    """One ``sky.status`` cluster record → Cluster (its launch YAML's secrets masked)."""
    name = _opt_str(record.get("name"))
    if name is None:
        return None
    cloud = _opt_str(record.get("cloud"))
    _, provider, _ = classify_placement(cloud, _opt_str(record.get("region")), None)
    resources_full = _opt_str(record.get("resources_str_full"))
    resources = _opt_str(record.get("resources_str")) or resources_full
    launch_yaml = record.get("last_creation_yaml")
    tree, _ = _redact_launch(launch_yaml) if isinstance(launch_yaml, str) else (None, None)
    return Cluster(
        name=name,
        status=_enum_value(record.get("status")) or "UNKNOWN",
        launched_at=_opt_float(record.get("launched_at")),
        cloud=cloud,
        region=_opt_str(record.get("region")),
        resources=resources,
        instance_type=instance_type_from_resources(resources_full or resources),
        provider=provider,
        endpoint=_opt_str(record.get("endpoint")),
        last_event=_opt_str(record.get("last_event")),
        envs=_envs(tree),
    )


@lru_cache(maxsize=256)
def _redact_launch(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """``redact_yaml``, cached like :func:`_redact_task` (the tree is shared: read only)."""
    return redact_yaml(text)


def map_clusters(records: object) -> list[Cluster]:
    """Cluster records → Clusters, skipping SkyServe's own controller clusters."""
    if not isinstance(records, list | tuple):
        return []
    clusters = (map_cluster(r) for r in records if isinstance(r, Mapping))
    return sorted(
        (c for c in clusters if c is not None and not c.name.startswith("sky-serve-controller")),
        key=lambda c: c.name,
    )
