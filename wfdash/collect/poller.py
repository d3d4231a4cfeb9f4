"""The poll loop: status + scrapes + derivations → one immutable :class:`Snapshot`.

A cycle reads the status (less often than metrics, backing off while the control plane
fails), scrapes every live replica, derives rates and quantiles, diffs the status into
events and persists them. The next cycle is armed only when the previous one finished,
so a slow cycle stretches the interval instead of stacking work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from wfdash.collect.derive import CounterHistory, Ring, histogram_quantile, merge_buckets
from wfdash.collect.dialects import MetricPoint, ReplicaMetrics, derive_metrics, parse_point
from wfdash.collect.events import Event, diff_snapshots
from wfdash.collect.kinds import ReplicaStatus, ScrapeError
from wfdash.collect.mapping import map_clusters, map_services
from wfdash.collect.model import Cluster, Service
from wfdash.collect.redact import redact_text
from wfdash.collect.scrape import Scraper, ScrapeResult, metrics_url
from wfdash.collect.snapshot import (
    ClusterView,
    CycleStats,
    ReplicaView,
    ServiceView,
    Snapshot,
)
from wfdash.collect.source import SourceError, StatusSource
from wfdash.collect.store import EventStore

# Replicas worth scraping: a server may be up. PROVISIONING/PENDING have no server yet;
# SHUTTING_DOWN/PREEMPTED/FAILED ones are going away.
SCRAPED_STATUSES = frozenset(
    {ReplicaStatus.READY, ReplicaStatus.NOT_READY, ReplicaStatus.STARTING, ReplicaStatus.UNKNOWN}
)


@dataclass(frozen=True, slots=True)
class PollerConfig:
    metrics_interval: float = 2.0
    status_interval: float = 6.0
    rate_window: float = 60.0
    history_points: int = 300  # points kept for sparklines and plots
    max_backoff: float = 60.0
    metrics_path: str = "/metrics"
    # A control plane that hangs must not stop the metrics: give up on a status read after
    # this long, keep the last good status (marked stale) and back off.
    status_timeout: float = 20.0


class _ReplicaTracker:
    """Per-replica state across cycles: counter history, last metrics, sparklines."""

    __slots__ = ("history", "last_ok", "last_point", "metrics", "qps", "shape", "tps", "ttft")

    def __init__(self, capacity: int) -> None:
        self.history: CounterHistory | None = None
        self.shape: tuple[object, ...] | None = None  # of the points the history holds
        self.last_point: MetricPoint | None = None
        self.metrics: ReplicaMetrics | None = None
        self.last_ok: float | None = None
        self.qps = Ring(capacity)
        self.ttft = Ring(capacity)
        self.tps = Ring(capacity)

    def ingest(self, point: MetricPoint, t: float, config: PollerConfig) -> None:
        restarted = (
            self.last_point is not None
            and point.created is not None
            and self.last_point.created is not None
            and point.created != self.last_point.created
        )
        shape = point.shape()
        if self.history is None or shape != self.shape:
            layout = point.layout()
            if self.history is None:
                points = int(config.rate_window / max(config.metrics_interval, 0.1)) + 4
                self.history = CounterHistory(layout, points)
            else:  # series came or went: the others keep their history
                self.history.relayout(layout)
            self.shape = shape
        self.history.add(t, point.values(self.history.layout), reset=restarted)
        self.last_point = point
        self.last_ok = t
        self.metrics = derive_metrics(point, self.history, t, config.rate_window)

    def record(self, t: float, fresh: bool) -> None:
        metrics = self.metrics if fresh else None
        self.qps.append(t, metrics.qps if metrics else None)
        ttft = None
        if metrics is not None:
            ttft = metrics.ttft_p95 if metrics.ttft_p95 is not None else metrics.ttft_mean
        self.ttft.append(t, ttft)
        self.tps.append(t, metrics.gen_tps if metrics else None)


class _ServiceRings:
    __slots__ = ("qps", "ready", "target", "ttft_p50", "ttft_p95")

    def __init__(self, capacity: int) -> None:
        self.qps = Ring(capacity)
        self.ttft_p50 = Ring(capacity)
        self.ttft_p95 = Ring(capacity)
        self.ready = Ring(capacity)
        self.target = Ring(capacity)


class Poller:
    """Turns a status source plus replica ``/metrics`` into snapshots, one cycle at a time."""

    def __init__(
        self,
        source: StatusSource,
        scraper: Scraper,
        *,
        store: EventStore | None = None,
        config: PollerConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.scraper = scraper
        self.store = store
        self.config = config or PollerConfig()
        self._clock = clock
        self._services: list[Service] = []
        self._clusters: list[Cluster] = []
        self._status_at: float | None = None
        self._status_error: str | None = None
        self._status_failures = 0
        self._next_status_at = 0.0
        self._trackers: dict[str, _ReplicaTracker] = {}
        self._rings: dict[str, _ServiceRings] = {}
        self._expected_removals: set[tuple[str, int]] = set()
        self._last_seen: dict[str, Service] | None = None

    def expect_removal(self, service: str, replica_id: int) -> None:
        """A removal we asked for (terminate, scale-down): not a preemption when it vanishes."""
        self._expected_removals.add((service, replica_id))

    def refresh_status_now(self) -> None:
        self._next_status_at = 0.0

    @property
    def status_retry_in(self) -> float:
        return max(0.0, self._next_status_at - self._clock())

    async def cycle(
        self, on_status: Callable[[Snapshot], Awaitable[None] | None] | None = None
    ) -> Snapshot:
        """One poll: the status when it is due, then every replica's ``/metrics``.

        ``on_status``, if given, gets the status alone as soon as it is read, with the
        cycle's events, before the scrapes: they can take the whole scrape timeout when a
        replica is unreachable. The snapshot returned then carries no events.
        """
        t0 = time.perf_counter()
        now = self._clock()
        events: list[Event] = []
        if now >= self._next_status_at:
            events = await self._read_status(now)
            if on_status is not None and self._status_error is None:
                await _delivered(on_status(self._status_only(events)))
                events = []
        views, clusters, stats = await self._scrape_and_derive()
        return Snapshot(
            taken_at=self._clock(),
            source=self.source.description,
            services=views,
            status_ok=self._status_error is None,
            status_error=self._status_error,
            status_at=self._status_at,
            events=tuple(events),
            clusters=clusters,
            stats=CycleStats(time.perf_counter() - t0, *stats),
        )

    async def run(
        self,
        on_snapshot: Callable[[Snapshot], Awaitable[None] | None],
        stop: asyncio.Event,
        paused: Callable[[], bool] = lambda: False,
        wake: asyncio.Event | None = None,
        *,
        early_status: bool = False,
    ) -> None:
        """Cycle until ``stop`` is set; ``wake`` cuts the wait short (refresh now).

        ``early_status``: deliver the first status as soon as it is read, ahead of its
        scrapes, so a dashboard just opened shows the service and its replicas at once.
        """
        first = early_status
        while not stop.is_set():
            started = time.perf_counter()
            if not paused():
                snapshot = await self.cycle(on_status=on_snapshot if first else None)
                first = False
                await _delivered(on_snapshot(snapshot))
            delay = max(0.05, self.config.metrics_interval - (time.perf_counter() - started))
            waiters = [asyncio.ensure_future(stop.wait())]
            if wake is not None:
                waiters.append(asyncio.ensure_future(wake.wait()))
            _, pending = await asyncio.wait(
                waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            if wake is not None:
                wake.clear()

    async def _read_status(self, now: float) -> list[Event]:
        try:
            async with asyncio.timeout(self.config.status_timeout):
                records = await self.source.fetch_services()
                cluster_records = await self.source.fetch_clusters()
        except TimeoutError:
            return self._status_failed(
                now, f"no status answer in {self.config.status_timeout:g}s (control plane hung?)"
            )
        except SourceError as exc:
            return self._status_failed(now, str(exc))
        except Exception as exc:  # a control plane bug must not kill the dashboard
            return self._status_failed(now, f"{type(exc).__name__}: {exc}")
        self._services = map_services(records)
        self._clusters = map_clusters(cluster_records)
        self._status_at = now
        self._status_error = None
        self._status_failures = 0
        self._next_status_at = now + self.config.status_interval
        return await self._record_events(now)

    def _status_only(self, events: Sequence[Event]) -> Snapshot:
        """The status just read, with what the last scrapes knew (nothing, at first)."""
        now = self._clock()
        return Snapshot(
            taken_at=now,
            source=self.source.description,
            services=tuple(
                ServiceView(service=service, replicas=self._replica_views(service, {}, now))
                for service in self._services
            ),
            status_ok=True,
            status_at=self._status_at,
            events=tuple(events),
            clusters=self._cluster_views({}, now),
        )

    def _replica_views(
        self, service: Service, results: Mapping[str, ScrapeResult], now: float
    ) -> tuple[ReplicaView, ...]:
        return tuple(
            ReplicaView(
                replica=replica,
                **_endpoint_fields(self._trackers.get(replica.key), results.get(replica.key), now),
            )
            for replica in service.replicas
        )

    def _cluster_views(
        self, results: Mapping[str, ScrapeResult], now: float
    ) -> tuple[ClusterView, ...]:
        return tuple(
            ClusterView(
                cluster=cluster,
                **_endpoint_fields(self._trackers.get(cluster.key), results.get(cluster.key), now),
            )
            for cluster in self._clusters
        )

    def _status_failed(self, now: float, message: str) -> list[Event]:
        self._status_failures += 1
        self._status_error = redact_text(
            message.strip().splitlines()[0] if message.strip() else "status read failed"
        )
        backoff = self.config.status_interval * (2 ** min(self._status_failures - 1, 6))
        self._next_status_at = now + min(self.config.max_backoff, backoff)
        return []

    async def _record_events(self, now: float) -> list[Event]:
        store = self.store
        baseline = False
        if self._last_seen is None:
            # First status of this run: diff against what the store saw before a restart;
            # only a store that never saw anything makes this a baseline (no "added" flood).
            if store is not None and await asyncio.to_thread(store.has_last_seen):
                self._last_seen = await asyncio.to_thread(store.last_seen)
            else:
                self._last_seen, baseline = {}, True
        events = diff_snapshots(
            self._last_seen, self._services, now, self._expected_removals, baseline=baseline
        )
        self._last_seen = {s.name: s for s in self._services}
        present = {(s.name, r.replica_id) for s in self._services for r in s.replicas}
        self._expected_removals &= present
        if store is None:
            return events
        return await asyncio.to_thread(store.commit_cycle, events, self._services, now)

    async def _scrape_and_derive(
        self,
    ) -> tuple[tuple[ServiceView, ...], tuple[ClusterView, ...], tuple[int, int, int]]:
        path = self.config.metrics_path
        targets: list[tuple[str, str | None]] = [
            (replica.key, metrics_url(replica.endpoint, path))
            for service in self._services
            for replica in service.replicas
            # No endpoint yet (setup still running): nothing to scrape, and no failure.
            if replica.status in SCRAPED_STATUSES and replica.endpoint
        ]
        targets += [
            (cluster.key, metrics_url(cluster.endpoint, path))
            for cluster in self._clusters
            if cluster.status == "UP" and cluster.endpoint
        ]
        results = await self.scraper.scrape_all([url for _, url in targets])
        by_key: dict[str, ScrapeResult] = {}
        for (key, _), result in zip(targets, results, strict=True):
            by_key[key] = self._ingest(key, result)
        live_keys = {r.key for s in self._services for r in s.replicas}
        live_keys |= {c.key for c in self._clusters}
        for key in set(self._trackers) - live_keys:
            del self._trackers[key]
        for name in set(self._rings) - {s.name for s in self._services}:
            del self._rings[name]
        now = self._clock()
        views = tuple(self._service_view(service, by_key, now) for service in self._services)
        clusters = self._cluster_views(by_key, now)
        errors = sum(1 for r in by_key.values() if not r.ok)
        return views, clusters, (len(by_key), errors, sum(r.nbytes for r in by_key.values()))

    def _ingest(self, key: str, result: ScrapeResult) -> ScrapeResult:
        tracker = self._trackers.get(key)
        if tracker is None:
            tracker = self._trackers[key] = _ReplicaTracker(self.config.history_points)
        if result.ok and result.body is not None:
            point, expo = parse_point(result.body)
            if point is None:
                detail = "no known metric families" + (
                    " (body truncated)" if expo.truncated else ""
                )
                result = result.failed(ScrapeError.UNPARSABLE, detail)
            else:
                tracker.ingest(point, result.started, self.config)
        tracker.record(result.started, fresh=result.ok)
        return result

    def _service_view(
        self, service: Service, results: Mapping[str, ScrapeResult], now: float
    ) -> ServiceView:
        replicas = self._replica_views(service, results, now)
        fresh = [v.metrics for v in replicas if v.metrics is not None and v.stale_s is None]
        scraped = [v for v in replicas if v.replica.status in SCRAPED_STATUSES]
        qps_values = [m.qps for m in fresh if m.qps is not None]
        qps = sum(qps_values) if qps_values else None
        merged = merge_buckets(m.ttft_window for m in fresh if m.ttft_window)
        tps_values = [m.gen_tps for m in fresh if m.gen_tps is not None]
        error_weights = [
            (m.error_share, m.qps) for m in fresh if m.error_share is not None and m.qps
        ]
        error_share = None
        if error_weights:
            total_qps = sum(q for _, q in error_weights)
            error_share = sum(e * q for e, q in error_weights) / total_qps if total_qps else None
        view = ServiceView(
            service=service,
            replicas=replicas,
            qps=qps,
            qps_complete=bool(scraped) and len(qps_values) == len(scraped),
            ttft_p50=histogram_quantile(0.5, merged) if merged else None,
            ttft_p95=histogram_quantile(0.95, merged) if merged else None,
            gen_tps=sum(tps_values) if tps_values else None,
            error_share=error_share,
        )
        return self._with_history(view, now)

    def _with_history(self, view: ServiceView, now: float) -> ServiceView:
        rings = self._rings.get(view.service.name)
        if rings is None:
            rings = self._rings[view.service.name] = _ServiceRings(self.config.history_points)
        target = view.service.target_num_replicas
        rings.qps.append(now, view.qps)
        rings.ttft_p50.append(now, view.ttft_p50)
        rings.ttft_p95.append(now, view.ttft_p95)
        rings.ready.append(now, float(view.service.ready_count))
        rings.target.append(now, float(target) if target is not None else None)
        return replace(
            view,
            history_t=tuple(t for t, _ in rings.qps.items()),
            qps_history=rings.qps.values(),
            ttft_p50_history=rings.ttft_p50.values(),
            ttft_p95_history=rings.ttft_p95.values(),
            ready_history=rings.ready.values(),
            target_history=rings.target.values(),
        )


async def _delivered(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result


def _endpoint_fields(
    tracker: _ReplicaTracker | None, result: ScrapeResult | None, now: float
) -> dict[str, Any]:
    """The EndpointView fields for one scraped server."""
    if tracker is None:
        return {}
    failed = result is not None and not result.ok
    stale = None
    if failed and tracker.last_ok is not None:
        stale = max(0.0, now - tracker.last_ok)
    return {
        "metrics": tracker.metrics,
        "scrape_error": result.error if result else None,
        "scrape_detail": result.detail if result else "",
        "scrape_latency_s": result.latency_s if result else None,
        "scrape_bytes": result.nbytes if result else 0,
        "last_ok": tracker.last_ok,
        "stale_s": stale,
        "qps_history": tracker.qps.values(),
        "ttft_history": tracker.ttft.values(),
        "tps_history": tracker.tps.values(),
    }
