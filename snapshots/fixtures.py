"""Deterministic dashboard data, made by the real pipeline.

Every builder drives a real :class:`~wfdash.collect.poller.Poller` (status mapping, the
scraper, the Prometheus filter, dialect detection, rate and quantile derivation, event
diffing) against a fake clock, a fake status source returning SkyServe-shaped records
(from :mod:`tests.records`) and an ``httpx.MockTransport`` serving exposition text
rendered by :mod:`wfdash.sandbox.exposition` from counters that advance every cycle.
Load and latencies come from seeded ``random.Random`` instances, so the same call gives
the same :class:`Snapshot` every time.

The only inputs that depend on the machine (scrape latencies, the cycle's duration) are
replaced by fixed values afterwards, and the events of every cycle are gathered into the
last snapshot, newest first, as the event store would return them (use the app with
``store=None``).

The last cycle is taken at :data:`EPOCH`: give the app ``clock=lambda: EPOCH``.
"""

from __future__ import annotations

import asyncio
import copy
import math
import random
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import httpx

from tests import records
from wfdash.collect.events import Event
from wfdash.collect.poller import Poller, PollerConfig
from wfdash.collect.scrape import Scraper
from wfdash.collect.snapshot import ClusterView, EndpointView, ReplicaView, ServiceView, Snapshot
from wfdash.collect.source import SourceError
from wfdash.sandbox.exposition import (
    LlamaCppCounters,
    VllmCounters,
    render_llamacpp_metrics,
    render_vllm_metrics,
)

EPOCH = 1_763_900_000.0  # the "now" of every fixture: the last cycle's time
INTERVAL = 5.0  # seconds between cycles
CYCLES = 60  # five minutes of history for the sparklines and plots
SOURCE = "skypilot http://10.0.0.5:46580"
API_ERROR = (
    "Could not connect to SkyPilot API server at http://10.0.0.5:46580: "
    "connection refused (is `sky api start` running?)"
)

HOUR = 3600.0
DAY = 24 * HOUR


def clock() -> float:
    """The app's clock for every fixture."""
    return EPOCH


# --------------------------------------------------------------------------- fakes


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeSource:
    """A StatusSource answering whatever the scenario set last.

    The poller reads it again as soon as a scenario step changes it (``changed``), and
    otherwise rarely: mapping a record parses its task YAML, the slowest part of a cycle.
    """

    description = SOURCE

    def __init__(self) -> None:
        self._services: list[dict[str, Any]] = []
        self._clusters: list[dict[str, Any]] = []
        self.error: str | None = None
        self.changed = False

    @property
    def services(self) -> list[dict[str, Any]]:
        return self._services

    @services.setter
    def services(self, value: list[dict[str, Any]]) -> None:
        self._services, self.changed = value, True

    @property
    def clusters(self) -> list[dict[str, Any]]:
        return self._clusters

    @clusters.setter
    def clusters(self, value: list[dict[str, Any]]) -> None:
        self._clusters, self.changed = value, True

    async def fetch_services(self) -> Sequence[Mapping[str, Any]]:
        if self.error:
            raise SourceError(self.error)
        return copy.deepcopy(self.services)

    async def fetch_clusters(self) -> Sequence[Mapping[str, Any]]:
        if self.error:
            raise SourceError(self.error)
        return copy.deepcopy(self.clusters)


def _load(t: float, phase: float = 0.0) -> float:
    """A gentle, deterministic traffic curve around 1.0 (two superposed waves)."""
    return 1.0 + 0.35 * math.sin(2 * math.pi * (t / 240.0 + phase)) + 0.15 * math.sin(t / 37.0)


class VllmReplica:
    """A vLLM replica's counters, advanced like a replica serving ``qps`` requests/s."""

    def __init__(self, seed: int, qps: float, ttft: float, itl: float = 0.045) -> None:
        self.counters = VllmCounters(created=EPOCH - 3 * HOUR)
        self.rng = random.Random(seed)
        self.qps = qps
        self.ttft = ttft
        self.itl = itl
        self.phase = seed / 7.0
        self._owed = 0.0

    def step(self, t: float, dt: float) -> None:
        c, rng = self.counters, self.rng
        self._owed += self.qps * _load(t, self.phase) * dt
        n = int(self._owed)
        self._owed -= n
        for _ in range(n):
            ttft = self.ttft * rng.lognormvariate(0.0, 0.45)
            prompt = rng.randint(60, 420)
            generated = rng.randint(80, 320)
            itl = self.itl * rng.uniform(0.8, 1.25)
            reason = rng.choices(("stop", "length", "abort"), (0.9, 0.085, 0.015))[0]
            c.finished[reason] += 1
            c.ttft.observe(ttft)
            c.prompt_tokens += prompt
            c.generation_tokens += generated
            c.prompt_tokens_per_request.observe(prompt)
            c.generation_tokens_per_request.observe(generated)
            c.inter_token_latency.observe(itl)
            c.request_time_per_output_token.observe(itl)
            c.e2e_latency.observe(ttft + generated * itl)
            c.prefill_time.observe(ttft * 0.9)
            c.decode_time.observe(generated * itl)
            c.queue_time.observe(ttft * 0.1)
            c.inference_time.observe(ttft * 0.9 + generated * itl)
            c.prefix_cache_queries += prompt
            c.prefix_cache_hits += int(prompt * rng.uniform(0.2, 0.6))
        c.num_requests_running = min(4, n)
        c.num_requests_waiting = max(0, n - 4)
        c.kv_cache_usage = min(0.95, 0.08 * c.num_requests_running + 0.02)
        c.cpu_seconds += dt * 11.5

    def body(self) -> str:
        return render_vllm_metrics(self.counters)


class LlamaCppReplica:
    """BitNet's llama-server: token counters only (no request counter, no histograms)."""

    def __init__(
        self, seed: int, qps: float, prefill_tps: float = 180.0, decode_tps: float = 24.0
    ) -> None:
        self.counters = LlamaCppCounters()
        self.rng = random.Random(seed)
        self.qps = qps
        self.prefill_tps = prefill_tps
        self.decode_tps = decode_tps
        self.phase = seed / 5.0
        self._owed = 0.0

    def step(self, t: float, dt: float) -> None:
        c, rng = self.counters, self.rng
        self._owed += self.qps * _load(t, self.phase) * dt
        n = int(self._owed)
        self._owed -= n
        for _ in range(n):
            prompt = rng.randint(60, 420)
            generated = rng.randint(40, 160)
            prefill = self.prefill_tps * rng.uniform(0.9, 1.1)
            decode = self.decode_tps * rng.uniform(0.9, 1.1)
            c.prompt_tokens_total += prompt
            c.prompt_seconds_total += prompt / prefill
            c.tokens_predicted_total += generated
            c.tokens_predicted_seconds_total += generated / decode
            c.n_decode_total += generated
            c.prompt_tokens_seconds = prefill
            c.predicted_tokens_seconds = decode
        if c.n_decode_total:
            c.n_busy_slots_per_decode = 1.0 + min(n, 3) * 0.3
        c.requests_processing = min(4, n)
        c.requests_deferred = max(0, n - 4)
        c.kv_cache_tokens = 300 * c.requests_processing
        c.kv_cache_usage_ratio = c.kv_cache_tokens / 4096

    def body(self) -> str:
        return render_llamacpp_metrics(self.counters)


Server = VllmReplica | LlamaCppReplica


@dataclass
class Fleet:
    """The servers behind the replica URLs, and the faults the scenario injects."""

    servers: dict[str, Server] = field(default_factory=dict)  # origin → server
    faults: dict[str, str] = field(default_factory=dict)  # origin → "500" | "timeout"

    def handler(self, request: httpx.Request) -> httpx.Response:
        origin = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        fault = self.faults.get(origin)
        if fault == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if fault == "500":
            return httpx.Response(500, text="Internal Server Error\n")
        server = self.servers.get(origin)
        if server is None:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return httpx.Response(
            200,
            text=server.body(),
            headers={"content-type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    def step(self, t: float, dt: float) -> None:
        for server in self.servers.values():
            server.step(t, dt)


# --------------------------------------------------------------------------- records

VLLM_YAML = records.SERVICE_YAML.replace("BACKEND: bitnet", "BACKEND: vllm").replace(
    "MODEL_PATH: /models/model.gguf", "MODEL: microsoft/bitnet-b1.58-2B-4T"
)
POLICY = "Autoscaling from 3 to 8 replicas (target QPS per replica: 0.5)"


def base(replica_id: int, **extra: Any) -> dict[str, Any]:
    """A base-layer replica on the Hetzner SSH pool, up for three days."""
    extra.setdefault("launched_at", EPOCH - 3 * DAY - 4 * HOUR + replica_id * 60)
    return records.ssh_replica(replica_id, host=f"10.100.1.{replica_id}", **extra)


def burst(replica_id: int, **extra: Any) -> dict[str, Any]:
    """A burst-layer GCP spot replica (c3d-standard-16), up for 2h13m."""
    extra.setdefault("launched_at", EPOCH - (2 * HOUR + 13 * 60) + replica_id * 60)
    return records.cloud_replica(replica_id, **extra)


def provisioning(replica_id: int, detail: str) -> dict[str, Any]:
    """A replica SkyServe is still launching: no endpoint yet, a status detail."""
    record = records.cloud_replica(replica_id, status="PROVISIONING")
    record.update(endpoint=None, launched_at=None, status_detail=detail)
    return record


def service(
    replicas: list[dict[str, Any]], *, name: str = "wf-bitnet", yaml: str = VLLM_YAML, **extra: Any
) -> dict[str, Any]:
    extra.setdefault("target_num_replicas", 5)
    extra.setdefault("uptime", EPOCH - 3 * DAY)
    extra.setdefault("policy", POLICY)
    return records.service(replicas, name=name, yaml_content=yaml, **extra)


C3D_YAML = """\
name: wf-c3d
resources:
  infra: gcp/us-central1
  instance_type: c3d-standard-90
  ports: 8080
envs:
  BACKEND: bitnet
  CACHE_VERSION: v3
  HF_TOKEN: hf_abcdefghijklmnopqrstuvwxyz
setup: bash setup.sh
run: bash serve.sh
"""
C3D_URL = "http://34.1.9.90:8080"


def c3d_cluster() -> dict[str, Any]:
    """The standalone c3d-standard-90 cluster (sky launch skypilot/inference/gcp_c3d.yaml)."""
    return {
        "name": "wf-c3d",
        "launched_at": EPOCH - (5 * HOUR + 42 * 60),
        "status": "UP",
        "cloud": "GCP",
        "region": "us-central1",
        "resources_str": "1x(cpus=90, mem=360, c3d-standard-90, ...)",
        "resources_str_full": "1x(cpus=90, mem=360, c3d-standard-90, disk=256, ports=['8080'])",
        "last_event": "Running setup: BitNet.cpp build cache hit, CACHE_VERSION=v3",
        "endpoint": C3D_URL,
        "last_creation_yaml": C3D_YAML,
    }


def url(record: Mapping[str, Any]) -> str:
    return str(record["endpoint"])


# --------------------------------------------------------------------------- the run

Step = Callable[[int, FakeSource, Fleet], None]
"""Called before cycle ``i`` (0-based) to change the status records and the faults."""


async def _simulate(
    source: FakeSource, fleet: Fleet, steps: Sequence[Step], cycles: int, end: float
) -> list[Snapshot]:
    clock = FakeClock(end - (cycles - 1) * INTERVAL)
    config = PollerConfig(
        metrics_interval=INTERVAL, status_interval=60.0, rate_window=60.0, max_backoff=60.0
    )
    scraper = Scraper(timeout=3.0, transport=httpx.MockTransport(fleet.handler), clock=clock)
    poller = Poller(source, scraper, config=config, clock=clock)
    snapshots: list[Snapshot] = []
    try:
        for i in range(cycles):
            for step in steps:
                step(i, source, fleet)
            if source.changed:
                source.changed = False
                poller.refresh_status_now()
            if i:
                clock.t += INTERVAL
                fleet.step(clock.t, INTERVAL)
            snapshots.append(await poller.cycle())
    finally:
        await scraper.aclose()
    return snapshots


def _run(
    source: FakeSource, fleet: Fleet, steps: Sequence[Step], cycles: int, end: float = EPOCH
) -> list[Snapshot]:
    """Cycles every INTERVAL up to ``end``, on an event loop of their own (callers may be
    inside one)."""

    def go() -> list[Snapshot]:
        return asyncio.run(_simulate(source, fleet, steps, cycles, end))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return go()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(go).result()


def _fixed_latency(view: EndpointView, index: int) -> float | None:
    if view.scrape_latency_s is None:
        return None
    if view.scrape_error is not None:
        return 3.0 if view.scrape_detail.startswith("no answer") else 0.002
    return 0.004 + 0.003 * (index % 5)  # 4 … 16 ms


def freeze(snapshots: Sequence[Snapshot]) -> Snapshot:
    """The last snapshot with machine-dependent fields fixed and every cycle's events."""
    last = snapshots[-1]
    events: list[Event] = [e for s in snapshots for e in s.events]
    services: list[ServiceView] = []
    for view in last.services:
        replicas: list[ReplicaView] = [
            replace(r, scrape_latency_s=_fixed_latency(r, r.replica.replica_id))
            for r in view.replicas
        ]
        services.append(replace(view, replicas=tuple(replicas)))
    clusters: list[ClusterView] = [
        replace(c, scrape_latency_s=_fixed_latency(c, i)) for i, c in enumerate(last.clusters)
    ]
    return replace(
        last,
        services=tuple(services),
        clusters=tuple(clusters),
        events=tuple(reversed(events)),
        stats=replace(last.stats, duration_s=0.012),
    )


def _static(services: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> Step:
    def step(i: int, source: FakeSource, fleet: Fleet) -> None:
        if i == 0:
            source.services, source.clusters = services, clusters

    return step


# --------------------------------------------------------------------------- builders


def healthy_parts() -> tuple[list[dict[str, Any]], Fleet]:
    """The healthy service's five replica records, and the fleet serving their metrics."""
    replicas = [base(1), base(2), base(3), burst(4), burst(5)]
    fleet = Fleet()
    for record, qps, ttft in zip(
        replicas, (0.55, 0.5, 0.6, 0.45, 0.4), (0.32, 0.35, 0.3, 0.42, 0.45), strict=True
    ):
        fleet.servers[url(record)] = VllmReplica(record["replica_id"], qps, ttft)
    fleet.servers[C3D_URL] = LlamaCppReplica(90, 0.9, prefill_tps=420.0, decode_tps=48.0)
    return replicas, fleet


@cache
def healthy() -> Snapshot:
    """wf-bitnet on vLLM: 3 base replicas (SSH hetzner-base) + 2 GCP spot burst, all
    READY, target 5; the standalone c3d cluster serving BitNet.

    Replica 5 is the autoscaler's latest: the target went 4 → 5 three and a half minutes
    ago, and the events show it going PROVISIONING → STARTING → READY.
    """
    replicas, fleet = healthy_parts()
    scale_up, started, ready = CYCLES - 42, CYCLES - 32, CYCLES - 26
    started_at = EPOCH - (CYCLES - 1 - started) * INTERVAL

    def autoscale(i: int, source: FakeSource, _: Fleet) -> None:
        fifth: dict[str, Any] | None = None
        if i == scale_up:
            fifth = provisioning(5, "Launching spot c3d-standard-16 on GCP us-central1")
        elif i == started:
            fifth = burst(5, status="STARTING", launched_at=started_at)
        elif i == ready:
            fifth = burst(5, launched_at=started_at)
        if i == 0:
            source.services = [service(replicas[:4], target_num_replicas=4)]
            source.clusters = [c3d_cluster()]
        elif fifth is not None:
            source.services = [service([*replicas[:4], fifth], target_num_replicas=5)]

    return freeze(_run(FakeSource(), fleet, [autoscale], CYCLES))


@cache
def healthy_plus_one() -> Snapshot:
    """``healthy`` a minute on (taken at EPOCH + 60 s), with burst replica 6 added, busier
    than all the others."""
    replicas, fleet = healthy_parts()
    extra = burst(6, launched_at=EPOCH + 30)
    fleet.servers[url(extra)] = VllmReplica(6, 1.6, 0.28)

    def add(i: int, source: FakeSource, _: Fleet) -> None:
        if i == CYCLES:
            source.services = [service([*replicas, extra], target_num_replicas=6)]

    steps = [_static([service(replicas)], [c3d_cluster()]), add]
    return freeze(_run(FakeSource(), fleet, steps, CYCLES + 12, end=EPOCH + 12 * INTERVAL))


@cache
def troubled() -> Snapshot:
    """wf-bitnet in trouble: spot replica 4 vanished (inferred preemption) and 6 is
    PROVISIONING in its place; 3 went NOT_READY; 2 answers HTTP 500 and 5 times out
    (both stale, last good data kept)."""
    replicas = [base(1), base(2), base(3), burst(4), burst(5)]
    fleet = Fleet()
    for record, qps, ttft in zip(
        replicas, (0.7, 0.65, 0.6, 0.55, 0.5), (0.4, 0.45, 1.8, 0.5, 0.55), strict=True
    ):
        fleet.servers[url(record)] = VllmReplica(record["replica_id"], qps, ttft)
    fleet.servers[C3D_URL] = LlamaCppReplica(90, 0.9, prefill_tps=420.0, decode_tps=48.0)
    replacement = provisioning(6, "Launching spot c3d-standard-16 on GCP europe-west4")
    preempted_at, not_ready_at, faults_at = CYCLES - 30, CYCLES - 14, CYCLES - 3

    def status(i: int, source: FakeSource, fleet: Fleet) -> None:
        current = [dict(r) for r in replicas]
        if i >= preempted_at:
            current = [r for r in current if r["replica_id"] != 4]
            current.append(replacement)
        if i >= not_ready_at:
            current[2] = {**current[2], "status": "NOT_READY"}
        if i in (0, preempted_at, not_ready_at):
            source.services = [service(current, target_num_replicas=5)]
            source.clusters = [c3d_cluster()]
        if i == preempted_at:
            del fleet.servers[url(replicas[3])]
        if i == faults_at:
            fleet.faults[url(replicas[1])] = "500"
            fleet.faults[url(replicas[4])] = "timeout"

    return freeze(_run(FakeSource(), fleet, [status], CYCLES))


@cache
def bitnet() -> Snapshot:
    """wf-bitnet on BitNet's llama-server: QPS unknown, TTFT an estimate ('~… est')."""
    replicas = [base(1), base(2), base(3), burst(4)]
    fleet = Fleet()
    for record, qps, prefill in zip(
        replicas, (0.3, 0.25, 0.35, 0.2), (170.0, 185.0, 160.0, 150.0), strict=True
    ):
        fleet.servers[url(record)] = LlamaCppReplica(record["replica_id"], qps, prefill)
    steps = [_static([service(replicas, yaml=records.SERVICE_YAML, target_num_replicas=4)], [])]
    return freeze(_run(FakeSource(), fleet, steps, CYCLES))


@cache
def two_services() -> Snapshot:
    """wf-bitnet (vLLM, 5 replicas) and wf-canary (llama.cpp, 2 replicas)."""
    replicas, fleet = healthy_parts()
    canary = [
        records.ssh_replica(1, host="10.100.2.1", name="wf-canary-1", launched_at=EPOCH - 7 * HOUR),
        records.cloud_replica(
            2,
            name="wf-canary-2",
            endpoint="http://34.1.3.2:8080",
            launched_at=EPOCH - 50 * 60,
            cloud="AWS",
            region="us-east-1",
            zone="us-east-1a",
            instance="r7a.4xlarge",
        ),
    ]
    for record in canary:
        fleet.servers[url(record)] = LlamaCppReplica(40 + record["replica_id"], 0.2)
    services = [
        service(replicas),
        service(
            canary, name="wf-canary", yaml=records.SERVICE_YAML, target_num_replicas=2,
            policy="Fixed 2 replicas", endpoint="http://34.10.20.31:30001", controller_job_id=9,
        ),
    ]  # fmt: skip
    return freeze(_run(FakeSource(), fleet, [_static(services, [c3d_cluster()])], 12))


BIG_POLICY = "Autoscaling from 3 to 40 replicas (target QPS per replica: 0.5)"


@cache
def big_fleet() -> Snapshot:
    """A fleet bigger than the screen: 3 base replicas and 37 GCP spot burst replicas at
    the autoscaler's maximum, 40 in all (the table must scroll, not push the panels out).
    """
    replicas = [base(i) for i in (1, 2, 3)] + [burst(i) for i in range(4, 41)]
    fleet = Fleet()
    rng = random.Random(40)
    for record in replicas:
        fleet.servers[url(record)] = VllmReplica(
            record["replica_id"], rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.5)
        )
    services = [service(replicas, target_num_replicas=40, policy=BIG_POLICY)]
    return freeze(_run(FakeSource(), fleet, [_static(services, [])], 12))


@cache
def empty() -> Snapshot:
    """The API server answers, but there are no services (and no clusters)."""
    return freeze(_run(FakeSource(), Fleet(), [_static([], [])], 2))


@cache
def unreachable() -> Snapshot:
    """The API server cannot be reached: status_ok False, no data ever read."""
    source = FakeSource()
    source.error = API_ERROR
    return freeze(_run(source, Fleet(), [], 1))
