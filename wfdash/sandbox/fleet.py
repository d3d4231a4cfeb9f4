"""The whole embedded sandbox: replica host + SkyServe emulation + load generator.

:class:`Sandbox` runs in one asyncio loop and is a :class:`~wfdash.collect.source.StatusSource`,
so the poller reads it exactly as it reads SkyPilot. :class:`SandboxThread` runs a Sandbox
in a thread of its own, so emulated replicas keep their timing while the dashboard's loop
is busy, and so that stopping wfdash stops every listener it started.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from wfdash.collect.source import SourceError
from wfdash.sandbox.clock import SimClock
from wfdash.sandbox.loadgen import LoadGenerator, TrafficShape
from wfdash.sandbox.replicas import Backend, ReplicaHost
from wfdash.sandbox.skyserve import (
    ControlPlaneFault,
    ReplicaPolicy,
    ServiceSpec,
    SkyServeEmulator,
    Timings,
)

T = TypeVar("T")

# Single-slot CPU replicas answer a ~60-token prompt and ~40 tokens in ~8 s: about 0.12
# requests/s each at saturation, so a target of 0.1 QPS per replica keeps queues short.
DEMO_TARGET_QPS = 0.1


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    seed: int = 0
    speed: float = 1.0
    service: str = "wf-bitnet"
    backend: Backend = Backend.BITNET
    pool_hosts: int = 3
    policy: ReplicaPolicy = field(
        default_factory=lambda: ReplicaPolicy(
            min_replicas=3,
            max_replicas=6,
            target_qps_per_replica=DEMO_TARGET_QPS,
            upscale_delay_seconds=60,
            downscale_delay_seconds=300,
        )
    )
    traffic: TrafficShape | None = field(
        default_factory=lambda: TrafficShape(
            base_qps=0.3,
            daily_amplitude=0.4,
            day_seconds=900,
            burst_every=240,
            burst_factor=2.5,
            burst_seconds=60,
            prompt_words=(20, 60),
            max_tokens=(16, 48),
        )
    )
    preemptions_per_hour: float = 1.0  # per spot replica, in simulated time
    clusters: tuple[tuple[str, str], ...] = (("ie-c3d", "c3d"),)
    timings: Timings = field(default_factory=Timings)
    warm: bool = True  # start as a fleet that has been running for a while


class Sandbox:
    """The fleet in the current loop. Also the StatusSource wfdash reads."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.clock = SimClock(self.config.speed)
        self.host = ReplicaHost(self.clock)
        self.emulator = SkyServeEmulator(
            self.host,
            self.clock,
            pool_hosts=self.config.pool_hosts,
            timings=self.config.timings,
            seed=self.config.seed,
            preemptions_per_hour=self.config.preemptions_per_hour,
            request_rate=self._request_rate,
        )
        self.loadgen: LoadGenerator | None = None
        self._arrivals: deque[tuple[float, int]] = deque(maxlen=4096)
        self._sampler: asyncio.Task[None] | None = None

    @property
    def description(self) -> str:
        return f"sandbox (seed {self.config.seed}, speed {self.config.speed:g}x)"

    async def start(self) -> None:
        config = self.config
        policy = config.policy
        if policy.target_qps_per_replica is not None:
            # Request rates are real ones (the autoscaler compares the real arrival rate
            # with this target) and a replica serves `speed` times more real requests per
            # second, so the target scales like the traffic: the fleet behaves the same at
            # any speed, and the target matches the QPS the dashboard measures.
            policy = replace(
                policy, target_qps_per_replica=policy.target_qps_per_replica * config.speed
            )
        spec = ServiceSpec(policy=policy, backend=config.backend)
        self.emulator.up(config.service, spec, warm=config.warm)
        for name, profile in config.clusters:
            self.emulator.launch_cluster(name, profile, warm=config.warm)
        await self.emulator.start()
        if config.traffic is not None:
            # The whole world runs `speed` times faster, traffic included.
            speed = config.speed
            shape = replace(
                config.traffic,
                base_qps=config.traffic.base_qps * speed,
                day_seconds=config.traffic.day_seconds / speed,
                burst_every=(config.traffic.burst_every or 0) / speed or None,
                burst_seconds=config.traffic.burst_seconds / speed,
            )
            self.loadgen = LoadGenerator(self.ready_urls, shape, seed=config.seed)
            await self.loadgen.start()
        self._sampler = asyncio.create_task(self._sample_arrivals())

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
        if self.loadgen is not None:
            await self.loadgen.stop()
        await self.emulator.close()
        await self.host.close()

    def ready_urls(self) -> Sequence[str]:
        """What SkyServe's load balancer routes to: the READY replicas of the service."""
        service = self.emulator.services.get(self.config.service)
        if service is None:
            return []
        return [
            r.emulated.url
            for r in sorted(service.replicas.values(), key=lambda r: r.replica_id)
            if r.status == "READY" and r.emulated is not None
        ]

    async def _sample_arrivals(self) -> None:
        loop = asyncio.get_running_loop()
        # The autoscaler's window is `qps_window` of simulated time: a few real seconds or
        # less at high speed. Sample often enough that it always holds several samples.
        period = min(1.0, self.clock.real(self.config.timings.qps_window) / 10)
        while True:
            if self.loadgen is not None:
                self._arrivals.append((loop.time(), self.loadgen.sent + self.loadgen.no_targets))
            await asyncio.sleep(period)

    def _request_rate(self, _service: str, window: float) -> float:
        """Requests per real second reaching the load balancer over the last ``window`` s."""
        if len(self._arrivals) < 2:
            return 0.0
        t1, n1 = self._arrivals[-1]
        start = next(((t, n) for t, n in self._arrivals if t >= t1 - window), self._arrivals[0])
        elapsed = t1 - start[0]
        return (n1 - start[1]) / elapsed if elapsed > 0 else 0.0

    async def fetch_services(self) -> Sequence[Mapping[str, Any]]:
        try:
            return await self.emulator.serve_status()
        except ControlPlaneFault as exc:
            raise SourceError(str(exc)) from exc

    async def fetch_clusters(self) -> Sequence[Mapping[str, Any]]:
        try:
            return await self.emulator.cluster_status()
        except ControlPlaneFault as exc:
            raise SourceError(str(exc)) from exc


class SandboxThread:
    """A Sandbox in a daemon thread with its own loop; a StatusSource for any other loop."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.sandbox = Sandbox(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="wfdash-sandbox", daemon=True
        )

    @property
    def description(self) -> str:
        return self.sandbox.description

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        self.submit(self.sandbox.start()).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the fleet: every replica listener closes and the thread ends."""
        if not self._thread.is_alive():
            return
        try:
            self.submit(self.sandbox.close()).result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            self._loop.close()

    def submit(self, coro: Awaitable[T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(_as_coroutine(coro), self._loop)

    async def fetch_services(self) -> Sequence[Mapping[str, Any]]:
        return await asyncio.wrap_future(self.submit(self.sandbox.fetch_services()))

    async def fetch_clusters(self) -> Sequence[Mapping[str, Any]]:
        return await asyncio.wrap_future(self.submit(self.sandbox.fetch_clusters()))


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable
