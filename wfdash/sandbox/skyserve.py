"""A SkyServe 0.14 emulation: services, replica lifecycles, spillover, autoscaling, spot.

It answers ``serve.status`` with records shaped exactly like SkyServe 0.14.1's (same keys,
status strings, ``cloud``/``region``/``infra`` as SkyPilot writes them), so the mapping
code that reads the real thing reads this too. Replicas are real HTTP listeners
(:mod:`wfdash.sandbox.replicas`); readiness is a real HTTP probe of their ``/health``.

What it models, and how faithfully, is written down in docs/sandbox.md. Durations are
simulated seconds (scaled by the :class:`SimClock`); request rates are real ones.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import yaml

from wfdash.pricing import (
    BASE_HOST_INSTANCE,
    CLUSTER_OFFERS,
    Offer,
    cheapest_ondemand,
    cheapest_spot,
)
from wfdash.sandbox.clock import SimClock
from wfdash.sandbox.replicas import Backend, EmulatedReplica, ReplicaHost, ReplicaSpec

POOL_NAME = "hetzner-base"
LAUNCHING = ("PENDING", "PROVISIONING", "STARTING")
ALIVE = (*LAUNCHING, "READY", "NOT_READY")
# A fake secret in every generated task YAML, so the sandbox exercises redaction.
SANDBOX_HF_TOKEN = "hf_SandboxFakeTokenDoNotShow0123456789"


class SandboxError(Exception):
    """A request the emulated SkyServe refuses, with SkyPilot's kind of message."""


class ControlPlaneFault(Exception):
    """An injected control-plane failure (error or timeout)."""


@dataclass(frozen=True, slots=True)
class Timings:
    """Simulated seconds for each phase (SkyServe defaults where it has them)."""

    pending: float = 2.0
    provision_ssh: float = 8.0
    provision_cloud: float = 45.0
    setup_cache_hit: float = 30.0  # the seeds: ~30 s when the build cache hits
    setup_cache_miss: float = 300.0  # the seeds: ~5 min to build BitNet.cpp
    probe_period: float = 10.0
    probe_timeout: float = 15.0  # SkyServe's readiness_probe.timeout_seconds default
    initial_delay: float = 1200.0  # SkyServe's initial_delay_seconds default
    not_ready_grace: float = 120.0  # NOT_READY this long → FAILED_PROBING
    shutdown: float = 8.0
    preempted_visible: float = 15.0  # the teardown that keeps a PREEMPTED row visible
    failed_visible: float = 60.0
    decision_interval: float = 20.0  # the autoscaler's decision period
    qps_window: float = 60.0
    controller_init: float = 5.0
    preempted_region_memory: float = 600.0  # the spot placer avoids a region this long


@dataclass(frozen=True, slots=True)
class ReplicaPolicy:
    """SkyServe's replica_policy, checked with SkyServe's own rules."""

    min_replicas: int = 3
    max_replicas: int = 8
    target_qps_per_replica: float | None = 0.5
    upscale_delay_seconds: float = 300.0
    downscale_delay_seconds: float = 1200.0
    dynamic_ondemand_fallback: bool = False

    def validate(self) -> None:
        if self.min_replicas < 0:
            raise SandboxError("min_replicas must be >= 0")
        if self.max_replicas < self.min_replicas:
            raise SandboxError("max_replicas must be greater than or equal to min_replicas.")
        if self.min_replicas != self.max_replicas and self.target_qps_per_replica is None:
            raise SandboxError("Autoscaling requires target_qps_per_replica to be set.")
        if self.target_qps_per_replica is not None and self.target_qps_per_replica <= 0:
            raise SandboxError("target_qps_per_replica must be > 0")

    def text(self) -> str:
        """The ``policy`` string SkyServe 0.14 shows."""
        if self.min_replicas == self.max_replicas:
            plural = "" if self.min_replicas == 1 else "s"
            return f"Fixed {self.min_replicas} replica{plural}"
        plural = "" if self.max_replicas == 1 else "s"
        return (
            f"Autoscaling from {self.min_replicas} to {self.max_replicas} replica{plural} "
            f"(target QPS per replica: {self.target_qps_per_replica})"
        )


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One version of a service's task: what ``serve up``/``serve update`` received."""

    policy: ReplicaPolicy = ReplicaPolicy()
    backend: Backend = Backend.BITNET
    cache_version: str = "v1"
    use_ssh_pool: bool = True
    load_balancing_policy: str = "least_load"
    slots: int = 1
    envs: tuple[tuple[str, str], ...] = (
        ("MODEL_PATH", "/models/falcon3-7b-instruct-1.58bit/ggml-model-i2_s.gguf"),
        ("NUM_THREADS", "16"),
        ("CONTEXT_SIZE", "4096"),
    )

    def same_replicas(self, other: ServiceSpec) -> bool:
        """True when only the ``service:`` section differs: replicas are reused."""
        return (
            replace(self, policy=other.policy, load_balancing_policy=other.load_balancing_policy)
            == other
        )

    def yaml(self, name: str) -> str:
        """The task YAML SkyServe keeps as ``yaml_content`` (with a fake secret in it)."""
        policy = self.policy
        replica_policy: dict[str, Any] = {
            "min_replicas": policy.min_replicas,
            "max_replicas": policy.max_replicas,
            "upscale_delay_seconds": policy.upscale_delay_seconds,
            "downscale_delay_seconds": policy.downscale_delay_seconds,
        }
        if policy.target_qps_per_replica is not None:
            replica_policy["target_qps_per_replica"] = policy.target_qps_per_replica
        if policy.dynamic_ondemand_fallback:
            replica_policy["dynamic_ondemand_fallback"] = True
        task = {
            "name": name,
            "service": {
                "readiness_probe": {"path": "/health", "initial_delay_seconds": 1200},
                "replica_policy": replica_policy,
                "load_balancing_policy": self.load_balancing_policy,
            },
            "resources": {"ports": 8080, "cpus": "16+", "memory": "64+", "use_spot": True},
            "envs": {
                "BACKEND": self.backend.value,
                "CACHE_VERSION": self.cache_version,
                **dict(self.envs),
                "LLAMA_ARG_ENDPOINT_METRICS": "1",
                "LLAMA_ARG_N_PARALLEL": str(self.slots),
                "HF_TOKEN": SANDBOX_HF_TOKEN,
            },
            "run": "bash serve.sh",
        }
        return yaml.safe_dump(task, sort_keys=False)


@dataclass
class _Replica:
    replica_id: int
    version: int
    spec: ServiceSpec
    status: str = "PENDING"
    status_detail: str | None = None
    phase_until: float = 0.0  # monotonic time the current phase ends
    is_spot: bool = False
    offer: Offer | None = None
    host: str | None = None  # SSH pool host address
    launched_at: int | None = None
    emulated: EmulatedReplica | None = None
    setup_started: float = 0.0
    cache_hit: bool = False
    probing: bool = False
    next_probe: float = 0.0
    not_ready_since: float | None = None
    removal_requested: bool = False
    warm: bool = False  # running before the sandbox started: its model is loaded already


@dataclass
class _Service:
    name: str
    job_id: int
    specs: dict[int, ServiceSpec]
    version: int
    created: float
    update_mode: str = "rolling"
    replicas: dict[int, _Replica] = field(default_factory=dict)
    next_replica_id: int = 1
    uptime: int | None = None
    target: int = 0
    upscale_votes: int = 0
    downscale_votes: int = 0
    next_decision: float = 0.0
    shutting_down: bool = False

    @property
    def spec(self) -> ServiceSpec:
        return self.specs[self.version]


@dataclass
class _Cluster:
    name: str
    profile: str
    offer: Offer
    backend: Backend
    cache_version: str
    envs: dict[str, str]
    status: str = "INIT"
    launched_at: int = 0
    phase: str = "provisioning"  # provisioning → setup → serving
    phase_until: float = 0.0
    cache_hit: bool = False
    emulated: EmulatedReplica | None = None
    last_event: str = ""


class SkyServeEmulator:
    """Runs the emulated controller in the current asyncio loop (call :meth:`start`)."""

    def __init__(
        self,
        host: ReplicaHost,
        clock: SimClock,
        *,
        pool_hosts: int = 3,
        timings: Timings | None = None,
        seed: int = 0,
        preemptions_per_hour: float = 0.0,
        request_rate: Callable[[str, float], float] | None = None,
        tick: float = 0.25,
    ) -> None:
        self.host = host
        self.clock = clock
        self.timings = timings or Timings()
        self.pool = [f"10.100.1.{i + 1}" for i in range(pool_hosts)]
        self.preemptions_per_hour = preemptions_per_hour
        self._request_rate = request_rate or (lambda _name, _window: 0.0)
        # At most one simulated second per tick, so phases and decisions keep their length
        # at high speeds (bounded below to keep the loop cheap).
        self._tick = min(tick, max(0.02, 1.0 / clock.speed))
        self._rng = random.Random(seed)
        self._seed = seed
        self.services: dict[str, _Service] = {}
        self.clusters: dict[str, _Cluster] = {}
        self.built_caches: set[tuple[str, str, str]] = set()  # (instance, backend, version)
        self.preempted_regions: dict[str, float] = {}
        self.spot_shortage = False  # injected: no spot capacity anywhere
        self.status_fault: str | None = None  # injected: "error" or "timeout"
        self._task: asyncio.Task[None] | None = None
        self._probe_client: httpx.AsyncClient | None = None
        self._next_job_id = 1

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Run the controller. Its first tick is done when this returns: a status read
        right after finds a warm fleet (``up(warm=True)`` before this) serving."""
        self._probe_client = httpx.AsyncClient(trust_env=False)
        await self.step()
        self._task = asyncio.create_task(self._run(), name="skyserve-emulator")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for service in self.services.values():
            for replica in service.replicas.values():
                await self._stop_server(replica)
        for cluster in self.clusters.values():
            if cluster.emulated is not None:
                await self.host.stop_replica(cluster.emulated)
                cluster.emulated = None
        if self._probe_client is not None:
            await self._probe_client.aclose()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            await self.step()

    def _now(self) -> float:
        """Simulated seconds on a monotonic axis (real monotonic × speed)."""
        return time.monotonic() * self.clock.speed

    # ------------------------------------------------------------------ status (reads)

    async def serve_status(self, names: list[str] | None = None) -> list[dict[str, Any]]:
        """``sky.get(sky.serve.status(names))`` as SkyServe 0.14.1 answers it."""
        await self._maybe_fault()
        services = [s for s in self.services.values() if names is None or s.name in names]
        return [self._service_record(s) for s in sorted(services, key=lambda s: s.name)]

    async def cluster_status(self) -> list[dict[str, Any]]:
        """``sky.get(sky.status())`` records for the standalone clusters, plus ``endpoint``."""
        await self._maybe_fault()
        return [
            self._cluster_record(c) for c in sorted(self.clusters.values(), key=lambda c: c.name)
        ]

    async def _maybe_fault(self) -> None:
        if self.status_fault == "timeout":
            await asyncio.sleep(3600)
        if self.status_fault == "error":
            raise ControlPlaneFault("Failed to refresh services status due to network error.")

    def _service_record(self, service: _Service) -> dict[str, Any]:
        now = self._now()
        replicas = [
            self._replica_record(service, r)
            for r in sorted(service.replicas.values(), key=lambda r: r.replica_id)
        ]
        if service.shutting_down:
            status = "SHUTTING_DOWN"
        elif now - service.created < self.timings.controller_init:
            status = "CONTROLLER_INIT"
        else:
            # 0.14.1 derives the service status from READY replicas only.
            status = (
                "READY"
                if any(r.status == "READY" for r in service.replicas.values())
                else "NO_REPLICA"
            )
        ready_versions = sorted(
            {r.version for r in service.replicas.values() if r.status == "READY"}
        )
        return {
            "name": service.name,
            "controller_job_id": service.job_id,
            "controller_port": 20000 + service.job_id,
            "load_balancer_port": 30000 + service.job_id,
            "status": status,
            "uptime": service.uptime,
            "policy": service.spec.policy.text(),
            "version": service.version,
            "active_versions": ready_versions or [service.version],
            "requested_resources_str": "[spot](cpus=16+, mem=64+, ports=['8080'])",
            "load_balancing_policy": service.spec.load_balancing_policy,
            "tls_encrypted": False,
            "pool": False,
            "controller_pid": 4000 + service.job_id,
            "controller_ip": "127.0.0.1",
            "hash": f"sandbox{service.job_id:04d}",
            "entrypoint": "sky serve up skypilot/service.yaml",
            "user_hash": "sandbox0",
            "yaml_content": service.spec.yaml(service.name),
            "pool_yaml": None,
            "target_num_replicas": service.target,
            "replica_info": replicas,
            "endpoint": f"http://127.0.0.1:{30000 + service.job_id}",
        }

    def _replica_record(self, service: _Service, replica: _Replica) -> dict[str, Any]:
        record: dict[str, Any] = {
            "replica_id": replica.replica_id,
            "name": f"{service.name}-{replica.replica_id}",
            "status": replica.status,
            "version": replica.version,
            "replica_info_version": 1,
            "endpoint": replica.emulated.url
            if replica.emulated and replica.status in ("READY", "NOT_READY", "STARTING")
            else None,
            "is_spot": replica.is_spot,
            "launched_at": replica.launched_at,
            "handle": None,
        }
        if replica.status == "PROVISIONING" and replica.status_detail:
            record["status_detail"] = replica.status_detail
        # A cluster exists (so the derived strings are set) from provisioning until teardown,
        # except that a preempted cluster is already gone.
        if replica.status not in ("PENDING", "PREEMPTED") and (replica.offer or replica.host):
            record.update(self._placement_fields(replica))
        return record

    @staticmethod
    def _placement_fields(replica: _Replica) -> dict[str, Any]:
        if replica.host is not None:
            instance = BASE_HOST_INSTANCE
            return {
                "cloud": "SSH",
                "region": f"ssh-{POOL_NAME}",
                "resources_str": f"1x(cpus=16, mem=128, {instance}, ...)",
                "resources_str_full": f"1x(cpus=16, mem=128, {instance}, disk=256, ports=['8080'])",
                "infra": f"SSH ({POOL_NAME})",
            }
        offer = replica.offer
        assert offer is not None
        spot = "[spot]" if replica.is_spot else ""
        short = (
            offer.instance_type
            if len(offer.instance_type) <= 15
            else offer.instance_type[:12] + "..."
        )
        return {
            "cloud": offer.cloud,
            "region": offer.region,
            "resources_str": f"1x{spot}(cpus={offer.cpus}, mem={offer.memory_gb}, {short}, ...)",
            "resources_str_full": (
                f"1x{spot}(cpus={offer.cpus}, mem={offer.memory_gb}, {offer.instance_type}, "
                "disk=256, ports=['8080'])"
            ),
            "infra": f"{offer.cloud} ({offer.zone})",
        }

    def _cluster_record(self, cluster: _Cluster) -> dict[str, Any]:
        offer = cluster.offer
        shape = f"cpus={offer.cpus}, mem={offer.memory_gb}"
        return {
            "name": cluster.name,
            "launched_at": cluster.launched_at,
            "handle": None,
            "last_use": f"sky launch skypilot/inference/{_cluster_yaml(cluster.profile)}",
            "status": cluster.status,
            "autostop": -1,
            "to_down": False,
            "cluster_hash": f"sandbox-{cluster.name}",
            "cluster_ever_up": cluster.status == "UP" or cluster.phase != "provisioning",
            "status_updated_at": cluster.launched_at,
            "user_hash": "sandbox0",
            "user_name": "sandbox",
            "workspace": "default",
            "is_managed": False,
            "last_event": cluster.last_event,
            "resources_str": f"1x({shape}, {offer.instance_type}, ...)",
            "resources_str_full": f"1x({shape}, {offer.instance_type}, disk=256, ports=['8080'])",
            "nodes": 1,
            "cloud": offer.cloud,
            "region": offer.region,
            "cpus": str(offer.cpus),
            "memory": str(offer.memory_gb),
            "labels": {},
            # wfdash's own addition (the real client asks `sky.endpoints` for it):
            "endpoint": cluster.emulated.url
            if cluster.emulated and cluster.phase == "serving"
            else None,
            "last_creation_yaml": _cluster_task_yaml(cluster),
        }

    # ------------------------------------------------------------------ actions (writes)

    def up(self, name: str, spec: ServiceSpec | None = None, *, warm: bool = False) -> None:
        """``sky serve up``: a new service (its replicas start at PENDING).

        ``warm`` starts it as if it had been running for a while: its first replicas are
        placed, built and serving (READY) from the first tick on (demos and tests start
        there; a dashboard opened on a running service sees it READY).
        """
        if name in self.services:
            raise SandboxError(f"The service {name!r} already exists.")
        spec = spec or ServiceSpec()
        spec.policy.validate()
        now = self._now()
        self.services[name] = _Service(
            name=name,
            job_id=self._next_job_id,
            specs={1: spec},
            version=1,
            created=now,
            target=spec.policy.min_replicas,
            next_decision=now + self.timings.decision_interval,
        )
        self._next_job_id += 1
        if warm:
            service = self.services[name]
            service.created -= self.timings.controller_init
            for _ in range(service.target):
                replica = self._launch(service, now)
                self._begin_provisioning(service, replica, now)
                self._begin_setup(replica, now, cache_hit=True)
                replica.launched_at = int(self.clock.now() - self._rng.uniform(3600, 86400))
                replica.phase_until = now
                replica.warm = True

    def update(self, name: str, spec: ServiceSpec, mode: str = "rolling") -> int:
        """``sky serve update``: a new version. Returns it."""
        service = self._service(name)
        if mode not in ("rolling", "blue_green"):
            raise SandboxError(f"Unknown update mode {mode!r}: use rolling or blue_green.")
        spec.policy.validate()
        old = service.spec
        service.version += 1
        service.specs[service.version] = spec
        service.update_mode = mode
        service.target = _clip(service.target, spec.policy)
        if old.same_replicas(spec):
            # Only the service section changed: replicas are reused under the new version.
            for replica in service.replicas.values():
                if replica.status in ALIVE:
                    replica.version = service.version
                    replica.spec = spec
        return service.version

    def scale(
        self, name: str, min_replicas: int, max_replicas: int, target_qps: float | None
    ) -> int:
        service = self._service(name)
        policy = replace(
            service.spec.policy,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            target_qps_per_replica=target_qps,
        )
        return self.update(name, replace(service.spec, policy=policy))

    def switch_backend(self, name: str, backend: Backend, mode: str = "rolling") -> int:
        service = self._service(name)
        if service.spec.backend is backend:
            raise SandboxError(f"{name} already runs {backend.value}.")
        return self.update(name, replace(service.spec, backend=backend), mode)

    def rebuild_service_cache(self, name: str, cache_version: str) -> int:
        service = self._service(name)
        if service.spec.cache_version == cache_version:
            raise SandboxError(f"CACHE_VERSION is already {cache_version}.")
        return self.update(name, replace(service.spec, cache_version=cache_version))

    def terminate_replica(self, name: str, replica_id: int) -> None:
        service = self._service(name)
        replica = service.replicas.get(replica_id)
        if replica is None or replica.status not in ALIVE:
            raise SandboxError(f"Replica {replica_id} of {name} is not running.")
        replica.removal_requested = True
        self._begin_shutdown(replica)

    def down(self, name: str) -> None:
        service = self._service(name)
        service.shutting_down = True
        for replica in service.replicas.values():
            if replica.status in ALIVE:
                self._begin_shutdown(replica)

    def preempt(self, name: str, replica_id: int) -> None:
        """Fault injection: the cloud takes a spot replica's instance away."""
        service = self._service(name)
        replica = service.replicas.get(replica_id)
        if replica is None or replica.status not in ALIVE or replica.offer is None:
            raise SandboxError(f"Replica {replica_id} of {name} is not a running cloud replica.")
        self._preempt(replica)

    def launch_cluster(
        self,
        name: str,
        profile: str,
        *,
        backend: Backend = Backend.BITNET,
        cache_version: str = "v1",
        envs: dict[str, str] | None = None,
        warm: bool = False,
    ) -> None:
        """``sky launch skypilot/inference/<profile>.yaml -c NAME``; relaunching re-runs setup.

        ``warm``: the cluster is up and built already, its server about to start.
        """
        if profile not in CLUSTER_OFFERS:
            raise SandboxError(
                f"Unknown profile {profile!r}: choose one of {', '.join(CLUSTER_OFFERS)}."
            )
        now = self._now()
        existing = self.clusters.get(name)
        if existing is not None:
            if existing.profile != profile:
                raise SandboxError(
                    f"Cluster {name!r} exists with {existing.offer.instance_type}; "
                    "down it first to change the instance type."
                )
            existing.cache_version = cache_version
            existing.backend = backend
            existing.envs = dict(envs or {})
            self._begin_cluster_setup(existing, now)
            return
        cluster = _Cluster(
            name=name,
            profile=profile,
            offer=CLUSTER_OFFERS[profile],
            backend=backend,
            cache_version=cache_version,
            envs=dict(envs or {}),
            launched_at=int(self.clock.now()),
            phase_until=now + self.timings.provision_cloud,
            last_event="Provisioning",
        )
        self.clusters[name] = cluster
        if warm:
            self.built_caches.add((cluster.offer.instance_type, backend.value, cache_version))
            self._begin_cluster_setup(cluster, now)
            cluster.phase_until = now
            cluster.launched_at = int(self.clock.now() - 7200)

    def rebuild_cluster_cache(self, name: str, cache_version: str) -> None:
        cluster = self.clusters.get(name)
        if cluster is None:
            raise SandboxError(f"Cluster {name!r} does not exist.")
        if cluster.cache_version == cache_version:
            raise SandboxError(f"CACHE_VERSION is already {cache_version}.")
        self.launch_cluster(
            name,
            cluster.profile,
            backend=cluster.backend,
            cache_version=cache_version,
            envs=cluster.envs,
        )

    async def down_cluster(self, name: str) -> None:
        cluster = self.clusters.pop(name, None)
        if cluster is None:
            raise SandboxError(f"Cluster {name!r} does not exist.")
        if cluster.emulated is not None:
            await self.host.stop_replica(cluster.emulated)

    def _service(self, name: str) -> _Service:
        service = self.services.get(name)
        if service is None or service.shutting_down:
            raise SandboxError(f"Service {name!r} does not exist.")
        return service

    # ------------------------------------------------------------------ the controller loop

    async def step(self) -> None:
        """One controller tick: lifecycles, probes, autoscaling, preemptions, clusters."""
        now = self._now()
        for service in list(self.services.values()):
            await self._advance_service(service, now)
            if service.shutting_down and not service.replicas:
                del self.services[service.name]
        for cluster in list(self.clusters.values()):
            await self._advance_cluster(cluster, now)
        cutoff = now - self.timings.preempted_region_memory
        self.preempted_regions = {k: t for k, t in self.preempted_regions.items() if t > cutoff}

    async def _advance_service(self, service: _Service, now: float) -> None:
        for replica in list(service.replicas.values()):
            await self._advance_replica(service, replica, now)
        if service.shutting_down:
            return
        if now >= service.next_decision:
            self._autoscale(service)
            service.next_decision = now + self.timings.decision_interval
        self._random_preemptions(service)
        self._reconcile(service, now)

    async def _advance_replica(self, service: _Service, replica: _Replica, now: float) -> None:
        t = self.timings
        status = replica.status
        if status == "PENDING" and now >= replica.phase_until:
            self._begin_provisioning(service, replica, now)
        elif status == "PROVISIONING" and now >= replica.phase_until:
            if replica.offer is None and replica.host is None:
                self._begin_provisioning(service, replica, now)  # still waiting for capacity
            else:
                self._begin_setup(replica, now)
        elif status == "STARTING":
            if replica.emulated is None and now >= replica.phase_until:
                # The build is done: from now on it is in the cache for other replicas.
                self.built_caches.add(self._cache_key(replica))
                replica.emulated = await self.host.start_replica(
                    self._replica_spec(replica), load_seconds=0.0 if replica.warm else None
                )
                replica.next_probe = now
                if replica.warm:  # it was serving before the sandbox started
                    replica.status = "READY"
                    replica.next_probe = now + t.probe_period
                    if service.uptime is None:
                        service.uptime = int(self.clock.now())
            if now - replica.setup_started > t.initial_delay:
                await self._fail(replica, "FAILED_INITIAL_DELAY", now)
            elif replica.emulated is not None:
                self._probe(service, replica, now)
        elif status in ("READY", "NOT_READY"):
            self._probe(service, replica, now)
            if (
                status == "NOT_READY"
                and replica.not_ready_since is not None
                and now - replica.not_ready_since > t.not_ready_grace
            ):
                await self._fail(replica, "FAILED_PROBING", now)
        elif status in ("SHUTTING_DOWN", "PREEMPTED") or status.startswith("FAILED"):
            await self._stop_server(replica)
            if now >= replica.phase_until:
                del service.replicas[replica.replica_id]

    def _replica_spec(self, replica: _Replica) -> ReplicaSpec:
        instance = (
            BASE_HOST_INSTANCE
            if replica.host
            else (replica.offer.instance_type if replica.offer else None)
        )
        return ReplicaSpec(
            backend=replica.spec.backend,
            instance_type=instance,
            slots=replica.spec.slots,
            seed=self._seed * 1000 + replica.replica_id,
            cache_version=replica.spec.cache_version,
            cache_hit=replica.cache_hit,
            build_seconds=self._setup_seconds(replica.cache_hit),
        )

    def _setup_seconds(self, cache_hit: bool) -> float:
        """How long the emulated setup's build step takes (what build info reports)."""
        t = self.timings
        return t.setup_cache_hit if cache_hit else t.setup_cache_miss

    def _begin_provisioning(self, service: _Service, replica: _Replica, now: float) -> None:
        t = self.timings
        replica.status = "PROVISIONING"
        taken = {
            r.host
            for s in self.services.values()
            for r in s.replicas.values()
            if r.host and r.status in ALIVE
        }
        free = [h for h in self.pool if h not in taken] if service.spec.use_ssh_pool else []
        if free:
            replica.host, replica.is_spot = free[0], False
            replica.status_detail = f"Launching on SSH ({POOL_NAME}) {free[0]}"
            replica.phase_until = now + t.provision_ssh
            return
        if not self.spot_shortage:
            offer = cheapest_spot(frozenset(self.preempted_regions))
            replica.offer, replica.is_spot = offer, True
        elif service.spec.policy.dynamic_ondemand_fallback:
            replica.offer, replica.is_spot = cheapest_ondemand(), False
        else:
            replica.offer = None
            replica.status_detail = "Waiting for spot capacity (no on-demand fallback)"
            replica.phase_until = now + t.provision_cloud
            return
        offer = replica.offer
        kind = "spot" if replica.is_spot else "on-demand"
        replica.status_detail = (
            f"Launching {kind} {offer.instance_type} on {offer.cloud} {offer.region}"
        )
        replica.phase_until = now + t.provision_cloud

    def _begin_setup(self, replica: _Replica, now: float, *, cache_hit: bool = False) -> None:
        replica.status = "STARTING"
        replica.status_detail = None
        replica.launched_at = int(self.clock.now())
        replica.setup_started = now
        key = self._cache_key(replica)
        # A build enters the cache when it finishes (see `_advance_replica`): a replica
        # whose setup starts while another one still builds the same key builds too.
        # `cache_hit` (a warm start) means the build exists already.
        replica.cache_hit = cache_hit or key in self.built_caches
        if replica.cache_hit:
            self.built_caches.add(key)
        t = self.timings
        replica.phase_until = now + (t.setup_cache_hit if replica.cache_hit else t.setup_cache_miss)

    @staticmethod
    def _cache_key(replica: _Replica) -> tuple[str, str, str]:
        """(instance type, backend, CACHE_VERSION): what a build is cached under."""
        instance = (
            BASE_HOST_INSTANCE
            if replica.host
            else (replica.offer.instance_type if replica.offer else "?")
        )
        return (instance, replica.spec.backend.value, replica.spec.cache_version)

    def _probe(self, service: _Service, replica: _Replica, now: float) -> None:
        """Start a real readiness probe of ``/health`` when one is due (never blocks the tick)."""
        if replica.probing or now < replica.next_probe or replica.emulated is None:
            return
        replica.probing = True
        replica.next_probe = now + self.timings.probe_period
        asyncio.get_running_loop().create_task(self._run_probe(service, replica))

    async def _run_probe(self, service: _Service, replica: _Replica) -> None:
        assert self._probe_client is not None and replica.emulated is not None
        url = replica.emulated.url + "/health"
        try:
            response = await self._probe_client.get(
                url, timeout=self.clock.real(self.timings.probe_timeout)
            )
            healthy = response.status_code == 200
        except (httpx.HTTPError, OSError):
            healthy = False
        finally:
            replica.probing = False
        if replica.status not in ("STARTING", "READY", "NOT_READY"):
            return
        now = self._now()
        if healthy:
            if replica.status != "READY" and service.uptime is None:
                service.uptime = int(self.clock.now())
            replica.status, replica.not_ready_since = "READY", None
        elif replica.status == "READY":
            replica.status, replica.not_ready_since = "NOT_READY", now

    async def _fail(self, replica: _Replica, status: str, now: float) -> None:
        replica.status = status
        replica.phase_until = now + self.timings.failed_visible
        await self._stop_server(replica)

    def _begin_shutdown(self, replica: _Replica) -> None:
        replica.status = "SHUTTING_DOWN"
        replica.phase_until = self._now() + self.timings.shutdown

    def _preempt(self, replica: _Replica) -> None:
        replica.status = "PREEMPTED"
        replica.phase_until = self._now() + self.timings.preempted_visible
        if replica.offer is not None:
            self.preempted_regions[f"{replica.offer.cloud}/{replica.offer.region}"] = self._now()

    async def _stop_server(self, replica: _Replica) -> None:
        if replica.emulated is not None:
            emulated, replica.emulated = replica.emulated, None
            await self.host.stop_replica(emulated)

    def _random_preemptions(self, service: _Service) -> None:
        if self.preemptions_per_hour <= 0:
            return
        chance = self.preemptions_per_hour * self._tick * self.clock.speed / 3600.0
        for replica in service.replicas.values():
            if (
                replica.is_spot
                and replica.status in ("STARTING", "READY")
                and self._rng.random() < chance
            ):
                self._preempt(replica)

    def _autoscale(self, service: _Service) -> None:
        """SkyServe's request-rate autoscaler: votes over decision periods, then move."""
        policy = service.spec.policy
        if policy.target_qps_per_replica is None or policy.min_replicas == policy.max_replicas:
            service.target = policy.min_replicas
            return
        qps = self._request_rate(service.name, self.clock.real(self.timings.qps_window))
        wanted = _clip(math.ceil(qps / policy.target_qps_per_replica), policy)
        period = self.timings.decision_interval
        if wanted > service.target:
            service.upscale_votes += 1
            service.downscale_votes = 0
            if service.upscale_votes >= max(1, int(policy.upscale_delay_seconds / period)):
                service.target, service.upscale_votes = wanted, 0
        elif wanted < service.target:
            service.downscale_votes += 1
            service.upscale_votes = 0
            if service.downscale_votes >= max(1, int(policy.downscale_delay_seconds / period)):
                service.target, service.downscale_votes = wanted, 0
        else:
            service.upscale_votes = service.downscale_votes = 0

    def _reconcile(self, service: _Service, now: float) -> None:
        """Launch or retire replicas toward the target; roll old versions out."""
        latest = [
            r
            for r in service.replicas.values()
            if r.version == service.version and r.status in ALIVE
        ]
        old = [
            r
            for r in service.replicas.values()
            if r.version != service.version and r.status in ALIVE
        ]
        for _ in range(service.target - len(latest)):
            self._launch(service, now)
        if len(latest) > service.target:
            for replica in sorted(latest, key=_retire_order)[: len(latest) - service.target]:
                self._begin_shutdown(replica)
        if old:
            ready_new = sum(1 for r in latest if r.status == "READY")
            if service.update_mode == "blue_green":
                if ready_new >= min(service.target, service.spec.policy.min_replicas or 1):
                    for replica in old:
                        self._begin_shutdown(replica)
            else:
                # Rolling: retire one old replica per new READY one beyond the target's share.
                excess = len(old) + ready_new - service.target
                for replica in sorted(old, key=_retire_order)[: max(0, excess)]:
                    self._begin_shutdown(replica)

    def _launch(self, service: _Service, now: float) -> _Replica:
        replica = _Replica(
            replica_id=service.next_replica_id,
            version=service.version,
            spec=service.spec,
            phase_until=now + self.timings.pending,
        )
        service.replicas[replica.replica_id] = replica
        service.next_replica_id += 1
        return replica

    # ------------------------------------------------------------------ clusters

    @staticmethod
    def _cluster_cache_key(cluster: _Cluster) -> tuple[str, str, str]:
        return (cluster.offer.instance_type, cluster.backend.value, cluster.cache_version)

    def _begin_cluster_setup(self, cluster: _Cluster, now: float) -> None:
        # As for replicas, the build enters the cache when setup ends (`_advance_cluster`).
        cluster.cache_hit = self._cluster_cache_key(cluster) in self.built_caches
        t = self.timings
        cluster.phase = "setup"
        cluster.status = "UP"
        cluster.phase_until = now + (t.setup_cache_hit if cluster.cache_hit else t.setup_cache_miss)
        what = (
            "restoring the cached build"
            if cluster.cache_hit
            else "building BitNet.cpp (cache miss)"
        )
        cluster.last_event = f"Running setup: {what}, CACHE_VERSION={cluster.cache_version}"

    async def _advance_cluster(self, cluster: _Cluster, now: float) -> None:
        if cluster.phase == "setup" and cluster.emulated is not None:
            # Relaunch: setup re-runs, so the old server is stopped first (even when a
            # fast cache hit ends setup before this tick).
            emulated, cluster.emulated = cluster.emulated, None
            await self.host.stop_replica(emulated)
        if now < cluster.phase_until:
            return
        if cluster.phase == "provisioning":
            self._begin_cluster_setup(cluster, now)
        elif cluster.phase == "setup":
            self.built_caches.add(self._cluster_cache_key(cluster))
            spec = ReplicaSpec(
                backend=cluster.backend,
                instance_type=cluster.offer.instance_type,
                seed=self._seed * 1000 + 999,
                cache_version=cluster.cache_version,
                cache_hit=cluster.cache_hit,
                build_seconds=self._setup_seconds(cluster.cache_hit),
            )
            cluster.emulated = await self.host.start_replica(spec)
            cluster.phase = "serving"
            cluster.last_event = (
                f"Serving on port 8080 ({'cache hit' if cluster.cache_hit else 'fresh build'})"
            )


def _clip(value: int, policy: ReplicaPolicy) -> int:
    return max(policy.min_replicas, min(policy.max_replicas, value))


def _retire_order(replica: _Replica) -> tuple[int, int, int]:
    """Which replica goes first: not ready before ready, burst before base, newest first."""
    return (replica.status == "READY", replica.host is not None, -replica.replica_id)


def _cluster_task_yaml(cluster: _Cluster) -> str:
    envs = {
        "BACKEND": cluster.backend.value,
        "CACHE_VERSION": cluster.cache_version,
        **cluster.envs,
        "HF_TOKEN": SANDBOX_HF_TOKEN,
    }
    task = {
        "name": cluster.name,
        "resources": {
            "infra": f"{cluster.offer.cloud.lower()}/{cluster.offer.region}",
            "instance_type": cluster.offer.instance_type,
            "ports": 8080,
        },
        "envs": envs,
        "setup": "bash setup.sh",
        "run": "bash serve.sh",
    }
    return yaml.safe_dump(task, sort_keys=False)


def _cluster_yaml(profile: str) -> str:
    return {"c3d": "gcp_c3d.yaml", "h3": "gcp_h3.yaml", "runpod": "runpod_cpu.yaml"}[profile]
