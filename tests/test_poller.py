"""Poll cycles end to end: a status source, real loopback replicas, derivations, events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from tests import fault_server as fs
from tests import records
from wfdash.collect.kinds import EventKind, ScrapeError
from wfdash.collect.poller import Poller, PollerConfig
from wfdash.collect.scrape import Scraper
from wfdash.collect.source import SourceError
from wfdash.collect.store import EventStore
from wfdash.sandbox.exposition import VllmCounters, render_vllm_metrics


class Clock:
    def __init__(self) -> None:
        self.t = 1_763_900_000.0

    def __call__(self) -> float:
        return self.t


class Source:
    description = "test"

    def __init__(self) -> None:
        self.services: list[dict[str, Any]] = []
        self.error: str | None = None
        self.calls = 0

    async def fetch_services(self) -> list[Mapping[str, Any]]:
        self.calls += 1
        if self.error:
            raise SourceError(self.error)
        return self.services

    async def fetch_clusters(self) -> list[Mapping[str, Any]]:
        return []


class Replica:
    """A loopback replica whose vLLM counters the test advances."""

    def __init__(self) -> None:
        self.counters = VllmCounters()
        self.fault: bytes | None = None

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.fault == b"500":
            await fs.respond(b"boom", status="500 Internal Server Error")(reader, writer)
        elif self.fault is not None:
            await fs.respond(self.fault)(reader, writer)
        else:
            await fs.respond(render_vllm_metrics(self.counters).encode())(reader, writer)

    def serve(self, n: int, ttft: float) -> None:
        self.counters.finished["stop"] += n
        for _ in range(n):
            self.counters.ttft.observe(ttft)


@pytest.fixture
async def fleet() -> AsyncIterator[tuple[list[Replica], list[str]]]:
    replicas = [Replica() for _ in range(3)]
    async with AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(fs.serve(r.handler)) for r in replicas]
        yield replicas, urls


def _service(urls: list[str], **extra: Any) -> dict[str, Any]:
    reps = [
        records.ssh_replica(1, endpoint=urls[0]),
        records.ssh_replica(2, endpoint=urls[1]),
        records.cloud_replica(3, endpoint=urls[2]),
    ]
    return records.service(reps, target_num_replicas=3, **extra)


async def _poller(source: Source, clock: Clock, store: EventStore | None = None) -> Poller:
    config = PollerConfig(metrics_interval=2, status_interval=30, rate_window=60, max_backoff=60)
    return Poller(source, Scraper(timeout=1, clock=clock), store=store, config=config, clock=clock)


async def test_service_qps_is_the_sum_and_ttft_is_merged(
    fleet: tuple[list[Replica], list[str]],
) -> None:
    replicas, urls = fleet
    source, clock = Source(), Clock()
    source.services = [_service(urls)]
    poller = await _poller(source, clock)
    first = await poller.cycle()
    assert first.status_ok and first.services[0].qps is None  # one scrape: no rate yet
    replicas[0].serve(20, 0.3)
    replicas[1].serve(10, 0.3)
    replicas[2].serve(10, 3.0)
    clock.t += 10
    snap = await poller.cycle()
    view = snap.services[0]
    assert [r.metrics.qps for r in view.replicas if r.metrics] == pytest.approx([2.0, 1.0, 1.0])
    assert view.qps == pytest.approx(4.0) and view.qps_complete
    # 30 of 40 requests in (0.25, 0.5], 10 in (2.5, 5]: merged p50 is in the fast bucket,
    # p95 in the slow one — an average of replica p95s would say otherwise.
    assert 0.25 < view.ttft_p50 <= 0.5  # type: ignore[operator]
    assert 2.5 < view.ttft_p95 <= 5.0  # type: ignore[operator]
    assert source.calls == 1  # status is read less often than metrics
    assert len(view.qps_history) == 2 and view.qps_history[0] is None
    assert snap.to_dict()["services"][0]["qps"] == pytest.approx(4.0)
    await poller.scraper.aclose()


async def test_failed_replica_is_stale_and_keeps_last_good_metrics(
    fleet: tuple[list[Replica], list[str]],
) -> None:
    replicas, urls = fleet
    source, clock = Source(), Clock()
    source.services = [_service(urls)]
    poller = await _poller(source, clock)
    await poller.cycle()
    replicas[0].serve(10, 0.3)
    clock.t += 10
    await poller.cycle()
    replicas[0].fault = b"500"
    replicas[1].fault = b"<html>not metrics</html>"
    clock.t += 5
    snap = await poller.cycle()
    bad, garbage, good = snap.services[0].replicas
    assert bad.scrape_error is ScrapeError.HTTP and bad.stale_s == pytest.approx(5.0)
    assert bad.metrics is not None and bad.metrics.qps == pytest.approx(
        1.0
    )  # last good, marked stale
    assert garbage.scrape_error is ScrapeError.UNPARSABLE
    assert good.scrape_error is None and good.stale_s is None
    assert snap.services[0].qps_complete is False
    assert bad.qps_history[-1] is None  # a gap in the sparkline, not a 0
    await poller.scraper.aclose()


async def test_status_failure_keeps_last_data_and_backs_off(
    fleet: tuple[list[Replica], list[str]],
) -> None:
    _, urls = fleet
    source, clock = Source(), Clock()
    source.services = [_service(urls)]
    poller = await _poller(source, clock)
    await poller.cycle()
    source.error = "SkyPilot API server unreachable: connection refused"
    retries = []
    for _ in range(3):
        clock.t += 60
        snap = await poller.cycle()
        retries.append(poller.status_retry_in)
        assert not snap.status_ok and snap.status_error == source.error
        assert [s.service.name for s in snap.services] == ["wf-bitnet"]  # last good kept
        assert snap.status_age_s is not None and snap.status_age_s >= 60
    assert retries == [30, 60, 60]  # exponential backoff, capped at max_backoff
    source.error = None
    clock.t += 60
    snap = await poller.cycle()
    assert snap.status_ok and snap.status_age_s == 0
    await poller.scraper.aclose()


async def test_vanished_spot_replica_is_one_preemption_across_restarts(
    fleet: tuple[list[Replica], list[str]],
    tmp_path: Path,
) -> None:
    _, urls = fleet
    source, clock = Source(), Clock()
    source.services = [_service(urls)]
    store = EventStore(tmp_path / "events.sqlite3")
    poller = await _poller(source, clock, store)
    first = await poller.cycle()
    assert first.events == ()  # first run ever: a baseline, no "added" flood
    gone = _service(urls)
    gone["replica_info"] = gone["replica_info"][:2]
    source.services = [gone]
    clock.t += 30
    snap = await poller.cycle()
    assert [e.kind for e in snap.events] == [EventKind.PREEMPTED]
    assert "inferred" in snap.events[0].message
    await poller.scraper.aclose()
    store.close()

    # wfdash restarts: a new poller on the same database sees the same status.
    store = EventStore(tmp_path / "events.sqlite3")
    restarted = await _poller(source, clock, store)
    clock.t += 10
    again = await restarted.cycle()
    assert again.events == ()
    assert len(store.query(kinds=[EventKind.PREEMPTED])) == 1
    await restarted.scraper.aclose()
    store.close()


async def test_requested_removal_is_not_a_preemption(
    fleet: tuple[list[Replica], list[str]],
) -> None:
    _, urls = fleet
    source, clock = Source(), Clock()
    source.services = [_service(urls)]
    poller = await _poller(source, clock)
    await poller.cycle()
    poller.expect_removal("wf-bitnet", 3)
    gone = _service(urls)
    gone["replica_info"] = gone["replica_info"][:2]
    source.services = [gone]
    clock.t += 30
    snap = await poller.cycle()
    assert [e.kind for e in snap.events] == [EventKind.REPLICA_REMOVED]
    await poller.scraper.aclose()


async def test_run_rearms_after_each_cycle_and_stops(
    fleet: tuple[list[Replica], list[str]],
) -> None:
    _, urls = fleet
    source = Source()
    source.services = [_service(urls)]
    poller = Poller(source, Scraper(timeout=1), config=PollerConfig(metrics_interval=0.05))
    stop = asyncio.Event()
    seen = []

    def on_snapshot(snapshot: object) -> None:
        seen.append(snapshot)
        if len(seen) == 3:
            stop.set()

    await asyncio.wait_for(poller.run(on_snapshot, stop), timeout=10)
    assert len(seen) == 3
    await poller.scraper.aclose()


async def test_the_first_status_is_delivered_before_its_scrapes(
    fleet: tuple[list[Replica], list[str]],
) -> None:
    """A dashboard just opened shows the service at once, although one replica hangs its
    scrape for the whole timeout; the cycle's events come once, with the status."""
    _, urls = fleet
    async with fs.serve(fs.hang()) as hung:
        source = Source()
        source.services = [_service([urls[0], urls[1], hung])]
        config = PollerConfig(metrics_interval=0.05, status_interval=30)
        poller = Poller(source, Scraper(timeout=1.5), config=config)
        stop = asyncio.Event()
        seen: list[tuple[float, Any]] = []
        loop = asyncio.get_running_loop()
        started = loop.time()

        def on_snapshot(snapshot: Any) -> None:
            seen.append((loop.time() - started, snapshot))
            if len(seen) == 3:
                stop.set()

        await asyncio.wait_for(poller.run(on_snapshot, stop, early_status=True), timeout=20)
        await poller.scraper.aclose()
    (early_at, early), (full_at, full), (_, later) = seen
    assert full_at >= 1.5  # the hung replica's scrape timeout
    assert early_at < 1.0  # the status did not wait for it
    assert early.status_ok
    assert [r.replica.replica_id for r in early.services[0].replicas] == [1, 2, 3]
    assert all(r.metrics is None and r.scrape_error is None for r in early.services[0].replicas)
    assert full.services[0].replicas[0].metrics is not None
    assert full.services[0].replicas[2].scrape_error is ScrapeError.TIMEOUT
    assert early.events == full.events == later.events == ()  # a first run: a baseline


async def test_events_come_once_with_the_early_status(
    fleet: tuple[list[Replica], list[str]],
) -> None:
    _, urls = fleet
    source, clock = Source(), Clock()
    source.services = [_service(urls)]
    poller = await _poller(source, clock)
    await poller.cycle()
    gone = _service(urls)
    gone["replica_info"] = gone["replica_info"][:2]
    source.services = [gone]
    clock.t += 30
    early: list[Any] = []
    snap = await poller.cycle(on_status=early.append)
    assert [e.kind for e in early[0].events] == [EventKind.PREEMPTED]
    assert snap.events == ()
    assert len(early[0].services[0].replicas) == 2
    # What the last scrapes knew stays on screen until this cycle's come.
    assert early[0].services[0].replicas[0].metrics is not None
    clock.t += 2
    early.clear()
    await poller.cycle(on_status=early.append)
    assert early == []  # no status read due: nothing early
    await poller.scraper.aclose()


async def test_hung_control_plane_times_out_and_metrics_go_on(
    fleet: tuple[list[Replica], list[str]],
) -> None:
    replicas, urls = fleet
    source, clock = Source(), Clock()
    source.services = [_service(urls)]
    config = PollerConfig(status_interval=30, status_timeout=0.2)
    poller = Poller(source, Scraper(timeout=1, clock=clock), config=config, clock=clock)
    await poller.cycle()

    async def hang() -> list[Mapping[str, Any]]:
        await asyncio.sleep(3600)
        return []

    source.fetch_services = hang  # type: ignore[method-assign]
    replicas[0].serve(10, 0.3)
    clock.t += 60
    snap = await asyncio.wait_for(poller.cycle(), timeout=5)
    assert not snap.status_ok and "no status answer" in (snap.status_error or "")
    assert snap.services[0].replicas[0].metrics is not None  # scraping went on
    await poller.scraper.aclose()


def test_tracker_reuses_the_layout_only_while_the_series_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Points whose series come and go (a histogram bucket added, a counter missing, the
    same keys in another order): the figures equal those of a tracker that works the
    layout out afresh at every scrape."""
    import math
    import random

    from wfdash.collect import poller as poller_module
    from wfdash.collect.dialects import Dialect, MetricPoint

    rng = random.Random(7)
    config = PollerConfig(metrics_interval=2.0, rate_window=20.0)
    cached = poller_module._ReplicaTracker(10)
    fresh = poller_module._ReplicaTracker(10)
    requests, errors, buckets = 0.0, 0.0, {0.1: 0.0, 1.0: 0.0, math.inf: 0.0}
    for step in range(60):
        requests += rng.randint(0, 5)
        errors += rng.randint(0, 1)
        for bound in buckets:
            buckets[bound] += rng.randint(0, 3) if bound == math.inf else 0
        if step == 20:
            buckets = {0.05: 0.0, **buckets}  # a bucket appears
        counters = {"requests": requests, "errors": errors}
        if step % 7 == 3:
            counters = {"errors": errors, "requests": requests}  # same keys, other order
        if 30 <= step < 34:
            del counters["errors"]  # a series drops out for a while
        point = MetricPoint(Dialect.VLLM, counters, {}, {"ttft": dict(buckets)})
        t = 1_000.0 + 2 * step
        cached.ingest(point, t, config)
        with monkeypatch.context() as patch:
            patch.setattr(MetricPoint, "shape", lambda self: object())
            fresh.ingest(point, t, config)
        assert cached.metrics == fresh.metrics, step
        assert cached.history is not None and fresh.history is not None
        assert cached.history.layout == fresh.history.layout
