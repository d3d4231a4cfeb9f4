"""The sandbox's acceptance criteria, through the real data path.

Every test runs a real :class:`Sandbox` (emulated SkyServe, loopback replicas answering
HTTP, a load generator sending real requests) and reads it with the real
:class:`Poller` (status → mapping → scrapes → derivations → events), then checks what
the dashboard would show against the sandbox's ground truth.

Time: durations in `Timings` are simulated seconds; the sandbox runs `speed` times
faster, so real seconds = simulated / speed. The emulated controller acts on 0.25 s
ticks of real time, which bounds how precisely lifecycle durations can be measured.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_asyncio

from tests.sandbox_helpers import (
    SERVICE,
    TIMINGS,
    Watch,
    describe,
    emulated_replica,
    fixed,
    polling,
    replica_views,
    running_sandbox,
    sandbox_config,
    service_view,
    statuses,
    wait_for,
)
from wfdash.collect.dialects import Dialect
from wfdash.collect.events import INFERRED_NOTE, Event
from wfdash.collect.kinds import EventKind, Layer, ReplicaStatus, ScrapeError
from wfdash.collect.model import Cluster
from wfdash.collect.snapshot import Snapshot
from wfdash.collect.store import EventStore
from wfdash.pricing import BURST_OFFERS, cheapest_ondemand, cheapest_spot
from wfdash.sandbox.clock import SimClock
from wfdash.sandbox.exposition import TTFT_BUCKETS
from wfdash.sandbox.fleet import Sandbox
from wfdash.sandbox.loadgen import TrafficShape
from wfdash.sandbox.replicas import Backend, Fault, ReplicaHost
from wfdash.sandbox.skyserve import ReplicaPolicy, SandboxError, ServiceSpec, SkyServeEmulator

# --------------------------------------------------------------------------- 1, 2: QPS, TTFT

TRAFFIC_SPEED = 20.0
RATE_WINDOW = 6.0  # real seconds: the poller's rate window in these two tests
SCRAPE_INTERVAL = 0.25


@dataclass(frozen=True)
class TrafficMeasurement:
    """What the poller derived at the end of a steady window, next to the ground truth."""

    window: tuple[float, float]  # wall-clock [t0, t1] the poller's rates cover
    window_s: tuple[float, ...]  # each replica's own window length
    completed: int  # successful completions the load generator saw in the window
    qps: float  # the poller's service QPS (sum of the replicas' rates)
    qps_truth: float
    replica_qps: tuple[tuple[float, float], ...]  # (poller, truth) per replica
    ttft: dict[float, tuple[float, float]]  # quantile → (poller, truth)
    dialects: tuple[Dialect, ...]
    text: str  # the figures, for failure messages


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vllm_traffic() -> TrafficMeasurement:
    """A steady stream of streamed requests to three vLLM replicas, seen by the poller.

    Speed 20 with 0.5 simulated requests/s gives 10 real requests/s at about half the
    fleet's capacity (short queues), so a 6 s window holds ~60 completions. TTFTs are then
    ~0.1-0.4 s real, in the histogram's wide (0.1, 0.25] and (0.25, 0.5] buckets, where a
    loaded event loop's few ms of lag on the client side cannot move a quantile two
    buckets (at speed 40 they sat in the 20 ms-wide buckets below 0.1 s).
    """
    config = sandbox_config(
        seed=7,
        speed=TRAFFIC_SPEED,
        backend=Backend.VLLM,
        pool_hosts=3,
        policy=fixed(3),
        traffic=TrafficShape(
            base_qps=0.5,
            daily_amplitude=0.0,
            burst_every=None,
            prompt_words=(20, 60),
            max_tokens=(16, 48),
            stream_share=1.0,  # the client's TTFT is then its first token, not the body
        ),
    )
    async with running_sandbox(config) as sandbox:
        # A warm fleet serves from the start (the wait is for a fleet that does not).
        await wait_for(
            lambda: len(sandbox.ready_urls()) == 3, timeout=15, describe=lambda: _fleet(sandbox)
        )
        async with polling(
            sandbox, metrics_interval=SCRAPE_INTERVAL, status_interval=60, rate_window=RATE_WINDOW
        ) as poller:
            watch = Watch(poller)
            started = time.monotonic()
            # Scrape until the rate window is full, plus two scrapes for good measure.
            while time.monotonic() - started < RATE_WINDOW + 2 * SCRAPE_INTERVAL:
                await watch.cycle()
                await asyncio.sleep(SCRAPE_INTERVAL)
            snapshot = await watch.cycle()
        return _measure(sandbox, snapshot)


def _measure(sandbox: Sandbox, snapshot: Snapshot) -> TrafficMeasurement:
    loadgen = sandbox.loadgen
    assert loadgen is not None
    view = service_view(snapshot)
    assert view.qps is not None, describe(snapshot)
    # Window alignment. A replica's rate is (counter at its newest scrape − counter at its
    # oldest scrape inside the rate window) / (time between the two), where a scrape's
    # time is when its request was sent (`last_ok` is the newest one, `window_s` the span).
    # The counter moves when a request's last token is produced; the load generator's
    # `done_at` is a few ms later, when the client has read the end of the stream, and a
    # scrape is rendered a ms or so after its timestamp. Both sides count the same
    # completions with edges shifted by milliseconds: a request can only land on different
    # sides of an edge if it finishes within those ms, well under one request per edge at
    # 10 requests/s (and the two edges' errors partly cancel). So the ground truth over
    # [oldest scrape, newest scrape] is the apples-to-apples figure. All replicas are
    # scraped concurrently, so their windows coincide to a few ms; the service window is
    # their union.
    windows = []
    for replica in view.replicas:
        assert replica.metrics is not None and replica.last_ok is not None, describe(snapshot)
        assert replica.metrics.window_s is not None, describe(snapshot)
        windows.append((replica.last_ok - replica.metrics.window_s, replica.last_ok))
    t0, t1 = min(w[0] for w in windows), max(w[1] for w in windows)
    replica_qps = []
    for replica, (r0, r1) in zip(view.replicas, windows, strict=True):
        assert replica.metrics is not None and replica.metrics.qps is not None
        done = sum(
            1
            for record in loadgen.completed_between(r0, r1)
            if record.ok and record.target == replica.replica.endpoint
        )
        replica_qps.append((replica.metrics.qps, done / (r1 - r0)))
    # TTFT: the histogram counts a request when its first token comes, `ttft_quantile`
    # selects requests by when they finished; a request lasts ~0.2-0.5 s here, so the
    # two selections differ by a few requests at the edges of a 6 s window: negligible
    # at the histogram's bucket resolution. The replica measures from the request's
    # arrival (queue + prefill), the client from sending it to reading the first chunk:
    # the difference is the loopback round trip, a millisecond or two.
    ttft = {}
    for q, derived in ((0.5, view.ttft_p50), (0.95, view.ttft_p95)):
        truth = loadgen.ttft_quantile(q, t0, t1)
        assert derived is not None and truth is not None, describe(snapshot)
        ttft[q] = (derived, truth)
    completed = sum(1 for record in loadgen.completed_between(t0, t1) if record.ok)
    qps_truth = loadgen.qps_between(t0, t1)
    text = (
        f"window {t1 - t0:.2f}s, {completed} completions; QPS poller {view.qps:.3f} vs truth "
        f"{qps_truth:.3f} (ratio {view.qps / qps_truth:.4f}); per replica "
        + ", ".join(f"{p:.3f}/{t:.3f}" for p, t in replica_qps)
        + "; TTFT "
        + ", ".join(
            f"p{round(q * 100)} poller {d:.3f}s (bucket {_bucket(d)}) vs truth {t:.3f}s "
            f"(bucket {_bucket(t)})"
            for q, (d, t) in ttft.items()
        )
    )
    return TrafficMeasurement(
        window=(t0, t1),
        window_s=tuple(w[1] - w[0] for w in windows),
        completed=completed,
        qps=view.qps,
        qps_truth=qps_truth,
        replica_qps=tuple(replica_qps),
        ttft=ttft,
        dialects=tuple(r.metrics.dialect for r in view.replicas if r.metrics is not None),
        text=text,
    )


def _bucket(seconds: float) -> int:
    """Index of the TTFT histogram bucket (lower, upper] holding ``seconds``."""
    return bisect_left(TTFT_BUCKETS, seconds)


def _fleet(sandbox: Sandbox) -> str:
    lines = []
    for service in sandbox.emulator.services.values():
        for replica in service.replicas.values():
            lines.append(f"{service.name}#{replica.replica_id} v{replica.version} {replica.status}")
    return ", ".join(lines) or "no replicas"


@pytest.mark.asyncio(loop_scope="module")
async def test_vllm_service_qps_is_within_5_percent_of_ground_truth(
    vllm_traffic: TrafficMeasurement,
) -> None:
    m = vllm_traffic
    print(m.text)
    assert m.dialects == (Dialect.VLLM,) * 3, m.text
    # The window filled (the oldest scrape inside it is at most one interval late).
    assert all(w >= RATE_WINDOW - 2 * SCRAPE_INTERVAL for w in m.window_s), m.text
    assert max(m.window_s) - min(m.window_s) < 0.1, m.text
    assert m.completed >= 40, m.text  # enough requests for 5% to mean something
    assert m.qps == pytest.approx(m.qps_truth, rel=0.05), m.text
    # Each replica's rate counts that replica's requests: at most a request or two apart.
    window = m.window[1] - m.window[0]
    for derived, truth in m.replica_qps:
        assert abs(derived - truth) * window <= 2.0, m.text


@pytest.mark.asyncio(loop_scope="module")
async def test_vllm_ttft_p50_p95_match_ground_truth_at_bucket_resolution(
    vllm_traffic: TrafficMeasurement,
) -> None:
    m = vllm_traffic
    print(m.text)
    for derived, truth in m.ttft.values():
        # Same bucket, or the neighbouring one (interpolation inside a bucket, and the
        # round trip, can move a value just across a boundary).
        assert abs(_bucket(derived) - _bucket(truth)) <= 1, m.text
        assert 0 < _bucket(truth) < len(TTFT_BUCKETS), m.text  # a finite bucket
    p50, p95 = m.ttft[0.5][0], m.ttft[0.95][0]
    assert p50 <= p95, m.text


# --------------------------------------------------------------------------- 3: preemption


def _preemptions(store: EventStore, replica_id: int) -> list[Event]:
    return [
        e
        for e in store.query(kinds=[EventKind.PREEMPTED], service=SERVICE)
        if e.replica_id == replica_id
    ]


async def _restart_adds_nothing(sandbox: Sandbox, path: Path, replica_id: int) -> None:
    """A second poller on the same database (wfdash restarted) records nothing new."""
    with EventStore(path) as store:
        async with polling(sandbox, store=store) as restarted:
            first = await restarted.cycle()
            again = await restarted.cycle()
        assert [e for e in first.events + again.events if e.kind is EventKind.PREEMPTED] == []
        assert len(_preemptions(store, replica_id)) == 1


async def test_preemption_shorter_than_a_status_poll_is_inferred_once(tmp_path: Path) -> None:
    # No pool hosts: every replica is a spot one in the cheapest spot region. The PREEMPTED
    # row lives 2 simulated seconds (0.2 s real), and no status is read meanwhile.
    config = sandbox_config(pool_hosts=0, policy=fixed(2))
    path = tmp_path / "events.sqlite3"
    async with running_sandbox(config) as sandbox:
        with EventStore(path) as store:
            async with polling(sandbox, store=store) as poller:
                watch = Watch(poller)
                await watch.until(lambda s: statuses(s) == {1: "READY", 2: "READY"}, timeout=10)
                victim = replica_views(watch.last)[1].replica
                assert victim.is_spot and victim.layer is Layer.BURST, describe(watch.last)
                sandbox.emulator.preempt(SERVICE, 1)
                await wait_for(
                    lambda: 1 not in sandbox.emulator.services[SERVICE].replicas,
                    timeout=5,
                    describe=lambda: _fleet(sandbox),
                )
                # The replacement gets a new id, away from the region just preempted.
                replacement = await watch.until(
                    lambda s: 3 in replica_views(s) and bool(replica_views(s)[3].replica.region),
                    timeout=10,
                )
                never_seen = all(statuses(s).get(1) != "PREEMPTED" for _, s in watch.snapshots)
                assert never_seen, watch.history()
                events = [e for _, s in watch.snapshots for e in s.events]
                preempted = [e for e in events if e.kind is EventKind.PREEMPTED]
                assert [e.replica_id for e in preempted] == [1], watch.history()
                assert INFERRED_NOTE in preempted[0].message, preempted[0].message
                assert preempted[0].data["detected"] == "vanished"
                assert preempted[0].data["is_spot"] is True
                new = replica_views(replacement)[3].replica
                assert new.is_spot and new.region != victim.region, describe(replacement)
                await watch.cycle()
            assert len(_preemptions(store, 1)) == 1
        await _restart_adds_nothing(sandbox, path, 1)


async def test_preemption_seen_as_a_preempted_row_is_recorded_once(tmp_path: Path) -> None:
    # The PREEMPTED row stays 10 simulated seconds (1 s real): the next status read sees
    # it, and so does a wfdash restarted meanwhile.
    config = sandbox_config(
        pool_hosts=0, policy=fixed(2), timings=replace(TIMINGS, preempted_visible=10)
    )
    path = tmp_path / "events.sqlite3"
    async with running_sandbox(config) as sandbox:
        with EventStore(path) as store:
            async with polling(sandbox, store=store) as poller:
                watch = Watch(poller)
                await watch.until(lambda s: statuses(s) == {1: "READY", 2: "READY"}, timeout=10)
                sandbox.emulator.preempt(SERVICE, 2)
                seen = await watch.cycle()
            assert statuses(seen)[2] == "PREEMPTED", describe(seen)
            preempted = [e for e in seen.events if e.kind is EventKind.PREEMPTED]
            assert [e.replica_id for e in preempted] == [2], seen.events
            assert "inferred" not in preempted[0].message, preempted[0].message
            assert preempted[0].data["detected"] == "status"
            assert preempted[0].data["old_status"] == "READY"
            assert preempted[0].data["is_spot"] is True

        # wfdash restarts while the row still shows PREEMPTED, then sees it go.
        with EventStore(path) as store:
            async with polling(sandbox, store=store) as restarted:
                watch = Watch(restarted)
                first = await watch.cycle()
                assert statuses(first).get(2) == "PREEMPTED", describe(first)
                await watch.until(lambda s: 2 not in statuses(s), timeout=10)
            events = [e for _, s in watch.snapshots for e in s.events]
            assert not [e for e in events if e.kind is EventKind.PREEMPTED], watch.history()
            # The row's disappearance is a removal of a preempted replica, not a second one.
            removed = [
                e for e in events if e.kind is EventKind.REPLICA_REMOVED and e.replica_id == 2
            ]
            assert [e.data["reason"] for e in removed] == ["preempted"], watch.history()
            assert len(_preemptions(store, 2)) == 1


# --------------------------------------------------------------------------- 4: backend switch


@pytest.mark.parametrize("mode", ["rolling", "blue_green"])
async def test_backend_switch_replaces_llamacpp_replicas_with_vllm_ones(mode: str) -> None:
    # Two llama-server replicas on pool hosts 1-2. The new version's first replica gets
    # pool host 3, the second a spot VM whose provisioning takes 20 simulated seconds
    # (1 s real) longer, so the two become READY at clearly different times.
    timings = replace(TIMINGS, provision_cloud=22, setup_cache_miss=4)
    config = sandbox_config(speed=20, pool_hosts=3, policy=fixed(2), timings=timings)
    async with running_sandbox(config) as sandbox, polling(sandbox) as poller:
        watch = Watch(poller)
        before = await watch.until(
            lambda s: (
                statuses(s) == {1: "READY", 2: "READY"}
                and _dialects(s) == {1: Dialect.LLAMACPP, 2: Dialect.LLAMACPP}
            ),
            timeout=10,
        )
        assert service_view(before).service.version == 1
        assert service_view(before).service.backend == "bitnet"
        switched_at = len(watch.snapshots)

        assert sandbox.emulator.switch_backend(SERVICE, Backend.VLLM, mode) == 2
        done = await watch.until(
            lambda s: (
                {(r.replica.version, r.replica.status) for r in replica_views(s).values()}
                == {(2, ReplicaStatus.READY)}
                and len(replica_views(s)) == 2
                and set(_dialects(s).values()) == {Dialect.VLLM}
            ),
            timeout=20,
        )
        service = service_view(done).service
        assert service.version == 2 and service.backend == "vllm", describe(done)
        assert set(replica_views(done)) == {3, 4}, describe(done)

        after = [s for _, s in watch.snapshots[switched_at:]]
        events = [e for s in after for e in s.events]
        assert any(
            e.kind is EventKind.VERSION_CHANGED and e.data["new_version"] == 2 for e in events
        ), watch.history()
        assert not any(e.kind is EventKind.PREEMPTED for e in events), watch.history()
        # The dialect follows the replica: llama.cpp for v1 ones, vLLM for v2 ones.
        for snapshot in after:
            for view in replica_views(snapshot).values():
                if view.metrics is not None:
                    expected = Dialect.LLAMACPP if view.replica.version == 1 else Dialect.VLLM
                    assert view.metrics.dialect is expected, describe(snapshot)
        counts = [_ready_by_version(s) for s in after]
        # Never less than the target READY while the update runs (no capacity dip).
        assert all(old + new >= 2 for old, new, _ in counts), watch.history()
        # One new replica READY, the other still starting: the modes differ right there.
        halfway = [(old, alive) for old, new, alive in counts if new == 1]
        assert halfway, watch.history()
        if mode == "rolling":
            # One old replica retired per new READY one: both versions serve meanwhile.
            assert any(old == 1 and alive == 1 for old, alive in halfway), watch.history()
        else:
            # Blue-green: the old version stays whole until min_replicas (2) new are READY.
            assert all(old == 2 and alive == 2 for old, alive in halfway), watch.history()
            assert all(alive == 2 for old, new, alive in counts if new < 2), watch.history()


def _dialects(snapshot: Snapshot) -> dict[int, Dialect | None]:
    return {
        rid: view.metrics.dialect if view.metrics is not None else None
        for rid, view in replica_views(snapshot).items()
    }


def _ready_by_version(snapshot: Snapshot) -> tuple[int, int, int]:
    """(READY v1 replicas, READY v2 replicas, v1 replicas not retiring)."""
    views = [v.replica for v in replica_views(snapshot).values()]
    old_ready = sum(1 for r in views if r.version == 1 and r.status is ReplicaStatus.READY)
    new_ready = sum(1 for r in views if r.version == 2 and r.status is ReplicaStatus.READY)
    old_alive = sum(
        1 for r in views if r.version == 1 and r.status is not ReplicaStatus.SHUTTING_DOWN
    )
    return old_ready, new_ready, old_alive


# --------------------------------------------------------------------------- 5: scaling


async def test_autoscaler_waits_the_upscale_delay_and_never_exceeds_max() -> None:
    # Speed 8: a decision period (4 simulated s) is 0.5 s real, two controller ticks.
    # upscale_delay 16 s = 4 consecutive decisions wanting more.
    speed, period_sim, votes = 8.0, TIMINGS.decision_interval, 4
    period = period_sim / speed
    policy = ReplicaPolicy(
        min_replicas=1,
        max_replicas=3,
        target_qps_per_replica=0.5,
        upscale_delay_seconds=votes * period_sim,
        downscale_delay_seconds=400,
    )
    traffic = TrafficShape(
        base_qps=0.1,  # a fifth of one replica's target: no reason to scale
        daily_amplitude=0.0,
        burst_every=None,
        prompt_words=(5, 10),
        max_tokens=(4, 8),
    )
    config = sandbox_config(speed=speed, pool_hosts=3, policy=policy, traffic=traffic)
    async with running_sandbox(config) as sandbox, polling(sandbox) as poller:
        watch = Watch(poller)
        first = await watch.until(lambda s: statuses(s) == {1: "READY"}, timeout=10)
        # Below target for longer than the upscale delay: the target stays at min, at any
        # speed, since the real arrival rate the autoscaler sees and its target both scale
        # with `speed`. (Before fleet.py scaled the target, 0.1 x 8 = 0.8 real requests/s
        # against a target of 0.5 scaled this fleet to 2-3 replicas right here.)
        quiet_until = watch.snapshots[0][0] + (votes + 2) * period
        while time.monotonic() < quiet_until:
            await watch.cycle()
            await asyncio.sleep(0.05)
        quiet = [s for _, s in watch.snapshots]
        assert all(service_view(s).service.target_num_replicas == 1 for s in quiet), watch.history()
        assert service_view(first).service.policy.max_replicas == 3

        loadgen = sandbox.loadgen
        assert loadgen is not None
        loadgen.set_rate(3.0 * speed)  # 3 simulated requests/s: 6x one replica's target
        stepped = time.monotonic()
        risen = await watch.until(
            lambda s: (service_view(s).service.target_num_replicas or 0) > 1, timeout=10
        )
        rise_periods = (watch.snapshots[-1][0] - stepped) / period
        print(f"target rose {rise_periods:.2f} decision periods after the step")
        # The first decision that wants more can come right after the step at the
        # earliest; the target moves at the `votes`-th consecutive one.
        assert rise_periods >= votes - 1, (rise_periods, watch.history())
        assert rise_periods <= votes + 4, (rise_periods, watch.history())
        assert service_view(risen).service.target_num_replicas == 3, describe(risen)

        # Traffic stays far above what 3 replicas should take: the target stays at max.
        hold_until = time.monotonic() + 2 * period
        while time.monotonic() < hold_until:
            await watch.cycle()
            await asyncio.sleep(0.05)
        for _, snapshot in watch.snapshots:
            view = service_view(snapshot)
            assert (view.service.target_num_replicas or 0) <= 3, describe(snapshot)
            alive = [
                r
                for r in view.service.replicas
                if r.status not in (ReplicaStatus.SHUTTING_DOWN, ReplicaStatus.PREEMPTED)
            ]
            assert len(alive) <= 3, describe(snapshot)
        assert service_view(watch.last).service.target_num_replicas == 3


async def test_autoscaler_sees_the_traffic_at_high_speed() -> None:
    # Speed 40: the autoscaler's 20 simulated seconds of rate window are 0.5 s real, less
    # than the 1 s the arrivals used to be sampled at (the window then held a single
    # sample and the rate read 0, so a fast demo never scaled).
    speed = 40.0
    policy = ReplicaPolicy(
        min_replicas=1,
        max_replicas=2,
        target_qps_per_replica=0.5,
        upscale_delay_seconds=2 * TIMINGS.decision_interval,
        downscale_delay_seconds=400,
    )
    traffic = TrafficShape(
        base_qps=2.0,  # 4x one replica's target
        daily_amplitude=0.0,
        burst_every=None,
        prompt_words=(5, 10),
        max_tokens=(4, 8),
    )
    config = sandbox_config(speed=speed, pool_hosts=3, policy=policy, traffic=traffic)
    async with running_sandbox(config) as sandbox, polling(sandbox) as poller:
        watch = Watch(poller)
        await watch.until(lambda s: service_view(s).service.target_num_replicas == 2, timeout=10)


def test_scale_with_max_below_min_is_refused_with_skypilots_rule() -> None:
    clock = SimClock(10)
    emulator = SkyServeEmulator(ReplicaHost(clock), clock)  # never started: no loop, no port
    emulator.up(SERVICE, ServiceSpec(policy=fixed(2)))
    with pytest.raises(SandboxError) as refused:
        emulator.scale(SERVICE, 3, 2, 0.5)
    assert "max_replicas must be greater than or equal to min_replicas" in str(refused.value)
    service = emulator.services[SERVICE]
    assert service.version == 1 and service.spec.policy == fixed(2)  # nothing applied


async def test_spillover_pool_first_then_cheapest_spot_and_shortage_fallback() -> None:
    config = sandbox_config(pool_hosts=2, policy=fixed(3))
    async with running_sandbox(config) as sandbox, polling(sandbox) as poller:
        watch = Watch(poller)
        placed = await watch.until(
            lambda s: (
                len(replica_views(s)) == 3
                and all(v.replica.cloud for v in replica_views(s).values())
            ),
            timeout=10,
        )
        views = replica_views(placed)
        for rid in (1, 2):
            replica = views[rid].replica
            assert replica.layer is Layer.BASE, describe(placed)
            assert replica.infra == "SSH (hetzner-base)" and replica.cloud == "SSH"
            assert replica.region == "ssh-hetzner-base" and replica.pool == "hetzner-base"
            assert not replica.is_spot
        burst = views[3].replica
        spot = cheapest_spot()
        assert spot.spot_per_hour == min(o.spot_per_hour or 99 for o in BURST_OFFERS)
        assert burst.layer is Layer.BURST and burst.is_spot, describe(placed)
        assert (burst.cloud, burst.region, burst.instance_type) == (
            spot.cloud,
            spot.region,
            spot.instance_type,
        )
        assert burst.infra == f"{spot.cloud} ({spot.zone})"

        # No spot capacity anywhere, no on-demand fallback: the 4th replica waits.
        sandbox.emulator.spot_shortage = True
        sandbox.emulator.scale(SERVICE, 4, 4, None)
        waiting = await watch.until(
            lambda s: (
                statuses(s).get(4) == "PROVISIONING"
                and "spot capacity" in (replica_views(s)[4].replica.status_detail or "")
            ),
            timeout=10,
        )
        assert replica_views(waiting)[4].replica.layer is Layer.UNPLACED
        # It keeps waiting through two more placement attempts.
        keep_until = time.monotonic() + 2 * TIMINGS.provision_cloud / config.speed
        while time.monotonic() < keep_until:
            snapshot = await watch.cycle()
            replica = replica_views(snapshot)[4].replica
            assert replica.status is ReplicaStatus.PROVISIONING, describe(snapshot)
            assert replica.cloud is None and "spot capacity" in (replica.status_detail or "")
            await asyncio.sleep(0.05)

        # dynamic_ondemand_fallback: the next attempt launches on-demand, still burst.
        spec = sandbox.emulator.services[SERVICE].spec
        fallback = replace(spec.policy, dynamic_ondemand_fallback=True)
        sandbox.emulator.update(SERVICE, replace(spec, policy=fallback))
        launched = await watch.until(lambda s: bool(replica_views(s)[4].replica.cloud), timeout=10)
        view = service_view(launched)
        assert view.service.policy.dynamic_ondemand_fallback is True
        replica = replica_views(launched)[4].replica
        ondemand = cheapest_ondemand()
        assert replica.layer is Layer.BURST and not replica.is_spot, describe(launched)
        assert (replica.cloud, replica.region) == (ondemand.cloud, ondemand.region)
        if replica.status is ReplicaStatus.PROVISIONING:
            assert "on-demand" in (replica.status_detail or ""), replica.status_detail


# --------------------------------------------------------------------------- 6: cache rebuild


def _starting_seconds(watch: Watch, replica_id: int) -> float:
    """Real seconds between the first poll showing the replica STARTING and the first
    one showing it READY."""
    started = ready = None
    for t, snapshot in watch.snapshots:
        status = statuses(snapshot).get(replica_id)
        if status == "STARTING" and started is None:
            started = t
        if status == "READY" and started is not None:
            ready = t
            break
    assert started is not None and ready is not None, watch.history()
    return ready - started


async def test_a_warm_fleet_is_serving_at_the_first_status_read() -> None:
    """The demo opens on a service that has been running for a while: every replica is
    READY and answers, and the standalone cluster serves, from the first read on."""
    config = sandbox_config(
        backend=Backend.VLLM, policy=fixed(3), clusters=(("ie-c3d", "c3d"),), speed=1
    )
    async with running_sandbox(config) as sandbox, polling(sandbox) as poller:
        snapshot = await poller.cycle()
        assert statuses(snapshot) == {1: "READY", 2: "READY", 3: "READY"}, describe(snapshot)
        assert all(r.scrape_error is None for r in service_view(snapshot).replicas)
        (cluster,) = snapshot.clusters
        assert cluster.cluster.endpoint is not None and cluster.scrape_error is None


async def test_cache_rebuild_shows_a_longer_starting_phase() -> None:
    speed = 10.0
    config = sandbox_config(
        speed=speed, pool_hosts=4, policy=fixed(1), clusters=(("ie-c3d", "c3d"),)
    )
    async with running_sandbox(config) as sandbox, polling(sandbox) as poller:
        watch = Watch(poller)

        def cluster(snapshot: Snapshot) -> Cluster:
            return next(v.cluster for v in snapshot.clusters if v.cluster.name == "ie-c3d")

        await watch.until(
            lambda s: statuses(s) == {1: "READY"} and cluster(s).endpoint is not None,
            timeout=10,
        )
        # A scale-up lands on pool host 2, whose build (host type, bitnet, v1) is cached.
        sandbox.emulator.scale(SERVICE, 2, 2, None)
        await watch.until(lambda s: statuses(s).get(2) == "READY", timeout=10)
        hit = _starting_seconds(watch, 2) * speed

        # CACHE_VERSION=v2: a new version whose every replica builds from scratch, and a
        # relaunch of the standalone cluster that re-runs its setup.
        sandbox.emulator.rebuild_service_cache(SERVICE, "v2")
        sandbox.emulator.rebuild_cluster_cache("ie-c3d", "v2")
        rebuilding = await watch.cycle()
        building = cluster(rebuilding)
        assert building.last_event is not None and "cache miss" in building.last_event
        assert "CACHE_VERSION=v2" in building.last_event, building.last_event
        assert building.status == "UP" and building.endpoint is None, describe(rebuilding)
        rebuilt_at = watch.snapshots[-1][0]

        def cluster_back(snapshot: Snapshot) -> bool:
            return cluster(snapshot).endpoint is not None

        await watch.until(
            lambda s: statuses(s) == {3: "READY", 4: "READY"} and cluster_back(s), timeout=20
        )
        misses = [_starting_seconds(watch, rid) * speed for rid in (3, 4)]
        back_at = next(t for t, s in watch.snapshots if t > rebuilt_at and cluster_back(s))
        cluster_setup = (back_at - rebuilt_at) * speed
        served = cluster(watch.last)
        print(
            f"STARTING (simulated s): hit {hit:.1f}, misses {[round(m, 1) for m in misses]}; "
            f"cluster without endpoint {cluster_setup:.1f}"
        )
        t = TIMINGS
        # STARTING = setup + model load + a probe or two, on 0.25 s (2.5 simulated s)
        # controller ticks; the upper bounds leave room for a loaded machine.
        tick = 0.25 * speed
        assert t.setup_cache_hit <= hit < t.setup_cache_miss / 2, hit
        for miss in misses:
            assert t.setup_cache_miss <= miss < 1.5 * t.setup_cache_miss, misses
            assert miss / hit > 3, (misses, hit)
        assert t.setup_cache_miss - tick <= cluster_setup < 1.5 * t.setup_cache_miss
        assert served.last_event is not None and "fresh build" in served.last_event
        assert served.cache_version == "v2"
        # While it rebuilt, the poller had no endpoint to scrape: it never did.
        for t_seen, snapshot in watch.snapshots:
            if rebuilt_at <= t_seen < back_at:
                view = next(v for v in snapshot.clusters if v.cluster.name == "ie-c3d")
                assert view.cluster.endpoint is None and view.scrape_error is None


# --------------------------------------------------------------------------- 7: faults

FAULTS = {
    1: (Fault.HANG, ScrapeError.TIMEOUT),
    2: (Fault.HTTP_500, ScrapeError.HTTP),
    3: (Fault.GARBAGE, ScrapeError.UNPARSABLE),
    4: (Fault.CLOSE, ScrapeError.NETWORK),
    5: (Fault.SLOW_METRICS, ScrapeError.TIMEOUT),
}
SCRAPE_TIMEOUT = 0.5  # real seconds; SLOW_METRICS answers after 5 s
STATUS_TIMEOUT = 0.5  # real seconds the poller waits for a status answer


@pytest_asyncio.fixture
async def six_replicas() -> AsyncIterator[tuple[Sandbox, Watch]]:
    config = sandbox_config(pool_hosts=6, policy=fixed(6))
    async with (
        running_sandbox(config) as sandbox,
        polling(sandbox, scraper_timeout=SCRAPE_TIMEOUT, status_timeout=STATUS_TIMEOUT) as poller,
    ):
        watch = Watch(poller)
        await watch.until(
            lambda s: (
                len(replica_views(s)) == 6
                and all(
                    v.replica.status is ReplicaStatus.READY and v.metrics is not None
                    for v in replica_views(s).values()
                )
            ),
            timeout=10,
        )
        yield sandbox, watch


async def test_replica_faults_show_as_scrape_errors_while_others_stay_fresh(
    six_replicas: tuple[Sandbox, Watch],
) -> None:
    sandbox, watch = six_replicas
    for rid, (fault, _) in FAULTS.items():
        emulated = emulated_replica(sandbox, rid).emulated
        assert emulated is not None
        emulated.set_fault(fault)
    snapshot = await watch.cycle()
    views = replica_views(snapshot)
    for rid, (fault, error) in FAULTS.items():
        view = views[rid]
        assert view.scrape_error is error, (fault, view.scrape_error, view.scrape_detail)
        assert view.stale_s is not None, fault  # the last good metrics, marked stale
        assert view.metrics is not None and view.metrics.dialect is Dialect.LLAMACPP
    assert "500" in views[2].scrape_detail
    assert f"{SCRAPE_TIMEOUT:g}s" in views[1].scrape_detail
    healthy = views[6]
    assert healthy.scrape_error is None and healthy.stale_s is None, healthy.scrape_detail
    assert healthy.metrics is not None and healthy.last_ok is not None
    assert healthy.last_ok >= snapshot.taken_at - snapshot.stats.duration_s - 0.01
    # One slow or dead replica holds the cycle no longer than the scrape timeout.
    assert snapshot.stats.scrape_errors == len(FAULTS)
    assert snapshot.stats.duration_s < SCRAPE_TIMEOUT + 1.0, snapshot.stats
    assert service_view(snapshot).qps_complete is False


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("error", "Failed to refresh services status due to network error."),
        ("timeout", f"no status answer in {STATUS_TIMEOUT:g}s"),
    ],
    ids=["error", "timeout"],
)
async def test_status_fault_keeps_the_last_services_and_recovers(
    six_replicas: tuple[Sandbox, Watch], fault: str, error: str
) -> None:
    sandbox, watch = six_replicas
    good = watch.last
    assert good.status_ok
    sandbox.emulator.status_fault = fault  # "timeout": the status call never returns
    started = time.monotonic()
    failed = await watch.cycle()
    # A hung control plane costs one status timeout, never the metrics.
    assert time.monotonic() - started < STATUS_TIMEOUT + 1.0
    assert not failed.status_ok
    assert failed.status_error is not None and failed.status_error.startswith(error)
    assert [v.service.name for v in failed.services] == [SERVICE]  # the last ones, kept
    assert set(replica_views(failed)) == set(replica_views(good))
    # The replicas are still scraped from the last known status, and fresh.
    assert all(v.scrape_error is None and v.stale_s is None for v in replica_views(failed).values())
    assert failed.status_age_s is not None and failed.status_age_s > 0
    sandbox.emulator.status_fault = None
    recovered = await watch.until(lambda s: s.status_ok, timeout=5)
    assert recovered.status_error is None and recovered.status_age_s == pytest.approx(0, abs=1)
    assert set(replica_views(recovered)) == set(replica_views(good))
