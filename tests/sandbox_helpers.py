"""Helpers for tests that run the embedded sandbox end to end through the real poller.

Everything here drives real objects: a :class:`Sandbox` (emulated SkyServe + loopback
replicas + load generator) read by a real :class:`Poller` with a real :class:`Scraper`.
Waits poll a condition with a deadline and, when it is not met, fail with the state that
was reached, never with a bare timeout.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from wfdash.collect.poller import Poller, PollerConfig
from wfdash.collect.scrape import Scraper
from wfdash.collect.snapshot import ReplicaView, ServiceView, Snapshot
from wfdash.collect.store import EventStore
from wfdash.sandbox.fleet import Sandbox, SandboxConfig
from wfdash.sandbox.skyserve import ReplicaPolicy, Timings, _Replica

SERVICE = "wf-bitnet"

# Simulated seconds, scaled down from SkyServe's so a lifecycle takes seconds of real time
# at speed 10-40 (real seconds = simulated seconds / speed).
TIMINGS = Timings(
    pending=1,
    provision_ssh=2,
    provision_cloud=4,
    setup_cache_hit=4,
    setup_cache_miss=40,
    probe_period=2,
    decision_interval=4,
    qps_window=20,
    preempted_visible=2,
    shutdown=2,
    controller_init=0.5,
)


def fixed(replicas: int) -> ReplicaPolicy:
    """A fixed-size policy (no autoscaling)."""
    return ReplicaPolicy(min_replicas=replicas, max_replicas=replicas, target_qps_per_replica=None)


def sandbox_config(**overrides: Any) -> SandboxConfig:
    """A quiet, fast, deterministic fleet: no traffic, no clusters, no random preemptions."""
    base = SandboxConfig(
        seed=1,
        speed=10,
        pool_hosts=3,
        policy=fixed(2),
        traffic=None,
        preemptions_per_hour=0,
        clusters=(),
        timings=TIMINGS,
    )
    return replace(base, **overrides)


@asynccontextmanager
async def running_sandbox(config: SandboxConfig) -> AsyncIterator[Sandbox]:
    """A started Sandbox, closed (every listener and client) however the test ends."""
    sandbox = Sandbox(config)
    ports: list[int] = []
    try:
        await sandbox.start()
        yield sandbox
    finally:
        ports = [replica.port for replica in sandbox.host.replicas]
        await sandbox.close()
    for port in ports:  # only when the test body passed: do not mask its failure
        assert not _listening(port), f"port {port} still open after Sandbox.close()"


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@asynccontextmanager
async def polling(
    sandbox: Sandbox,
    *,
    store: EventStore | None = None,
    scraper_timeout: float = 2.0,
    metrics_interval: float = 0.05,
    status_interval: float = 0.0,
    rate_window: float = 60.0,
    status_timeout: float = 20.0,
) -> AsyncIterator[Poller]:
    """A real Poller reading ``sandbox``; its scraper's connections are closed at the end.

    ``status_interval=0`` reads the status on every cycle, so a test sees each state.
    """
    config = PollerConfig(
        metrics_interval=metrics_interval,
        status_interval=status_interval,
        rate_window=rate_window,
        max_backoff=1.0,
        status_timeout=status_timeout,
    )
    poller = Poller(sandbox, Scraper(timeout=scraper_timeout), store=store, config=config)
    try:
        yield poller
    finally:
        await poller.scraper.aclose()


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    describe: Callable[[], str] = lambda: "",
    interval: float = 0.02,
) -> None:
    """Poll ``predicate`` until true; after ``timeout`` real seconds fail with ``describe()``."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached within {timeout:g}s; state: {describe()}")
        await asyncio.sleep(interval)


@dataclass
class Watch:
    """Runs poll cycles and keeps every snapshot, with the monotonic time it was taken."""

    poller: Poller
    snapshots: list[tuple[float, Snapshot]] = field(default_factory=list)

    @property
    def last(self) -> Snapshot:
        assert self.snapshots, "no poll cycle ran yet"
        return self.snapshots[-1][1]

    async def cycle(self) -> Snapshot:
        snapshot = await self.poller.cycle()
        self.snapshots.append((time.monotonic(), snapshot))
        return snapshot

    async def until(
        self, predicate: Callable[[Snapshot], bool], timeout: float, interval: float = 0.05
    ) -> Snapshot:
        """Cycle until ``predicate(snapshot)``; fail with the last state and its history."""
        deadline = time.monotonic() + timeout
        while True:
            snapshot = await self.cycle()
            if predicate(snapshot):
                return snapshot
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"not reached within {timeout:g}s; last state: {describe(snapshot)}\n"
                    f"history:\n{self.history()}"
                )
            await asyncio.sleep(interval)

    def history(self, limit: int = 40) -> str:
        """The distinct states seen, oldest first (the last ``limit`` of them)."""
        lines: list[str] = []
        start = self.snapshots[0][0] if self.snapshots else 0.0
        previous = None
        for t, snapshot in self.snapshots:
            text = describe(snapshot)
            if text != previous:
                lines.append(f"  +{t - start:6.2f}s {text}")
                previous = text
        return "\n".join(lines[-limit:])


def service_view(snapshot: Snapshot, name: str = SERVICE) -> ServiceView:
    for view in snapshot.services:
        if view.service.name == name:
            return view
    raise AssertionError(f"service {name!r} not in the snapshot: {describe(snapshot)}")


def replica_views(snapshot: Snapshot, name: str = SERVICE) -> dict[int, ReplicaView]:
    """The service's replica views by replica id ({} when the service is not listed)."""
    for view in snapshot.services:
        if view.service.name == name:
            return {r.replica.replica_id: r for r in view.replicas}
    return {}


def statuses(snapshot: Snapshot, name: str = SERVICE) -> dict[int, str]:
    return {rid: view.replica.status.value for rid, view in replica_views(snapshot, name).items()}


def describe(snapshot: Snapshot) -> str:
    """One line: status health, then each service's version, target and replicas."""
    parts = [f"status_ok={snapshot.status_ok}"]
    if snapshot.status_error:
        parts.append(f"status_error={snapshot.status_error!r}")
    for view in snapshot.services:
        service = view.service
        replicas = []
        for r in view.replicas:
            replica = r.replica
            text = f"#{replica.replica_id} v{replica.version} {replica.status.value}"
            text += f" {replica.layer.value}"
            if replica.is_spot:
                text += " spot"
            if r.metrics is not None:
                text += f" {r.metrics.dialect.value}"
            if r.scrape_error is not None:
                text += f" scrape={r.scrape_error.value}"
            replicas.append(text)
        parts.append(
            f"{service.name} v{service.version} target={service.target_num_replicas} "
            f"[{'; '.join(replicas)}]"
        )
    for cluster_view in snapshot.clusters:
        cluster = cluster_view.cluster
        parts.append(f"cluster {cluster.name} {cluster.status} endpoint={cluster.endpoint}")
    return " | ".join(parts)


def emulated_replica(sandbox: Sandbox, replica_id: int, name: str = SERVICE) -> _Replica:
    """The emulator's own record of a replica (to inject a fault into its server)."""
    return sandbox.emulator.services[name].replicas[replica_id]
