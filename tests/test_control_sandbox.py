"""Actions against the embedded sandbox, end to end: plan → runner → SandboxControlPlane →
the SkyServe emulation, watched through the real poller (status + real /metrics scrapes).

Each test runs a :class:`SandboxThread` (its own loop, as in ``wfdash demo``) at a high
SimClock speed; the plans come from real snapshots and the repository's skypilot/ files.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from tests.sandbox_helpers import (
    SERVICE,
    TIMINGS,
    Watch,
    fixed,
    polling,
    replica_views,
    sandbox_config,
    service_view,
    statuses,
)
from wfdash.collect.dialects import Dialect
from wfdash.collect.kinds import EventKind, Layer, ReplicaStatus
from wfdash.collect.snapshot import Snapshot
from wfdash.collect.store import EventStore
from wfdash.control.actions import Action, LaunchReplica, RebuildCache, Scale, SwitchBackend
from wfdash.control.plan import DeploymentFiles, Plan, plan_action
from wfdash.control.runner import ActionRecord, ActionRunner
from wfdash.control.sandbox_plane import SandboxControlPlane
from wfdash.sandbox.fleet import SandboxConfig, SandboxThread

ROOT = Path(__file__).resolve().parents[1]
SPEED = 40.0  # a 40 s (simulated) cache-miss build takes 1 s
DEPLOY = DeploymentFiles(ROOT / "skypilot", environ={})


@contextmanager
def sandbox_thread(config: SandboxConfig) -> Iterator[SandboxThread]:
    thread = SandboxThread(config)
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


async def run(runner: ActionRunner, plan: Plan, timeout: float = 20) -> ActionRecord:
    """Start the plan and wait (without blocking the loop) until it finished."""
    record = runner.start(plan, lambda _: None)
    deadline = time.monotonic() + timeout
    while any(r.id == record.id for r in runner.active()):
        assert time.monotonic() < deadline, f"still running: {runner.active()}"
        await asyncio.sleep(0.02)
    [done] = [r for r in runner.recent() if r.id == record.id]
    return done


def plan(action: Action, snapshot: Snapshot) -> Plan:
    return plan_action(action, snapshot, DEPLOY, pool_hosts=3)


def _audit_phases(store: EventStore) -> list[str]:
    return [e.data["phase"] for e in reversed(store.query(kinds=[EventKind.ACTION]))]


async def test_scale_up_fills_the_base_layer_then_bursts_to_spot(tmp_path: Path) -> None:
    config = sandbox_config(speed=SPEED, pool_hosts=3, policy=fixed(2))
    store = EventStore(tmp_path / "events.sqlite3")
    with sandbox_thread(config) as thread:
        runner = ActionRunner(SandboxControlPlane(thread), store, user="alice")
        async with polling(thread) as poller:
            watch = Watch(poller)
            ready = await watch.until(lambda s: statuses(s) == {1: "READY", 2: "READY"}, 10)
            scale = plan(Scale(service=SERVICE, min_replicas=5, max_replicas=5), ready)
            assert scale.summary == f"Scale {SERVICE}: min 2→5, max 2→5"
            # 3 pool hosts: one more base replica, then two on the cheapest spot offer.
            assert scale.restarts.endswith("3 new replica(s) launch (1 base, 2 burst spot)")
            assert scale.cost_after_per_hour is not None and scale.cost_now_per_hour is not None
            assert round(scale.cost_after_per_hour - scale.cost_now_per_hour, 3) == 0.22
            assert "min_replicas: 5" in scale.yaml_diff

            done = await run(runner, scale)
            assert (done.state, done.result) == ("succeeded", "applied as version 2")
            full = await watch.until(
                lambda s: (
                    [v.replica.status for v in replica_views(s).values()]
                    == [ReplicaStatus.READY] * 5
                ),
                timeout=15,
            )
    layers = {rid: (v.replica.layer, v.replica.provider) for rid, v in replica_views(full).items()}
    assert [layers[i][0] for i in (1, 2, 3)] == [Layer.BASE] * 3, watch.history()
    assert {layers[4], layers[5]} == {(Layer.BURST, "gcp")}, watch.history()
    assert all(v.replica.is_spot for v in replica_views(full).values() if v.replica.replica_id > 3)
    # Replicas were reused: the original two are still there under the new version.
    assert service_view(full).service.version == 2
    assert _audit_phases(store) == ["started", "succeeded"]
    store.close()


async def test_switch_backend_rolls_out_with_both_versions_serving(tmp_path: Path) -> None:
    # The second new replica is a spot VM that provisions 20 s (0.5 s real) later, so one
    # new replica is READY while an old one still serves.
    timings = replace(TIMINGS, provision_cloud=22, setup_cache_miss=8)
    config = sandbox_config(speed=SPEED, pool_hosts=3, policy=fixed(2), timings=timings)
    with sandbox_thread(config) as thread:
        runner = ActionRunner(SandboxControlPlane(thread), None, user="alice")
        async with polling(thread) as poller:
            watch = Watch(poller)
            ready = await watch.until(
                lambda s: (
                    statuses(s) == {1: "READY", 2: "READY"}
                    and {v.metrics.dialect for v in replica_views(s).values() if v.metrics}
                    == {Dialect.LLAMACPP}
                ),
                timeout=10,
            )
            switch = plan(SwitchBackend(service=SERVICE, backend="vllm"), ready)
            assert "every replica is replaced, rolling" in switch.restarts
            assert "-  BACKEND: bitnet\n+  BACKEND: vllm\n" in switch.yaml_diff
            done = await run(runner, switch)
            assert done.state == "succeeded", done
            assert done.result == "version 2 rolling out (rolling)"
            await watch.until(
                lambda s: (
                    {(v.replica.version, v.replica.status) for v in replica_views(s).values()}
                    == {(2, ReplicaStatus.READY)}
                    and {v.metrics.dialect for v in replica_views(s).values() if v.metrics}
                    == {Dialect.VLLM}
                ),
                timeout=20,
            )
    # Somewhere in the rollout, a READY v1 (llama.cpp) and a READY v2 (vLLM) replica
    # served side by side, each scraped in its own dialect.
    mixed = [
        s
        for _, s in watch.snapshots
        if {
            (v.replica.version, v.metrics.dialect)
            for v in replica_views(s).values()
            if v.replica.status is ReplicaStatus.READY and v.metrics and v.stale_s is None
        }
        >= {(1, Dialect.LLAMACPP), (2, Dialect.VLLM)}
    ]
    assert mixed, watch.history()


async def test_cluster_cache_rebuild_restarts_it_with_a_slow_setup(tmp_path: Path) -> None:
    config = sandbox_config(speed=SPEED, clusters=(("ie-c3d", "c3d"),))
    miss_real = TIMINGS.setup_cache_miss / SPEED
    store = EventStore(tmp_path / "events.sqlite3")
    with sandbox_thread(config) as thread:
        runner = ActionRunner(SandboxControlPlane(thread, poll_interval=0.02), store, user="bob")
        async with polling(thread) as poller:
            watch = Watch(poller)
            serving = await watch.until(
                lambda s: any(c.metrics is not None for c in s.clusters), timeout=10
            )
            assert serving.clusters[0].cluster.cache_version == "v1"
            rebuild = plan(
                RebuildCache(target="cluster", name="ie-c3d", cache_version="v2"), serving
            )
            assert "setup builds BitNet.cpp from scratch" in rebuild.restarts
            assert rebuild.command.startswith("sky cancel ie-c3d --all -y && sky launch ")
            assert "--env CACHE_VERSION=v2" in rebuild.command
            started = time.monotonic()
            task = asyncio.ensure_future(run(runner, rebuild))
            # While setup runs the server is down: no endpoint, nothing scraped.
            building = await watch.until(
                lambda s: s.clusters[0].cluster.endpoint is None, timeout=10
            )
            assert "cache miss" in (building.clusters[0].cluster.last_event or "")
            done = await task
            elapsed = time.monotonic() - started
            back = await watch.until(
                lambda s: (
                    s.clusters[0].cluster.endpoint is not None
                    and s.clusters[0].metrics is not None
                    and s.clusters[0].stale_s is None
                ),
                timeout=10,
            )
    assert done.state == "succeeded", done
    assert done.result == "ie-c3d is serving (fresh build)"
    assert any(
        "Running setup: building BitNet.cpp (cache miss), CACHE_VERSION=v2" in line
        for line in done.log
    ), done.log
    assert elapsed >= 0.8 * miss_real  # the full build, not a cache hit
    assert back.clusters[0].cluster.cache_version == "v2"
    assert _audit_phases(store) == ["started", "succeeded"]
    store.close()


async def test_launch_brings_up_a_new_cluster_with_metrics(tmp_path: Path) -> None:
    config = sandbox_config(speed=SPEED)
    with sandbox_thread(config) as thread:
        runner = ActionRunner(SandboxControlPlane(thread, poll_interval=0.02), None, user="bob")
        async with polling(thread) as poller:
            watch = Watch(poller)
            first = await watch.cycle()
            assert first.clusters == ()
            launch = plan(LaunchReplica(profile="gcp_h3", cluster_name="ie-h3"), first)
            assert launch.cost_after_per_hour is not None and launch.cost_now_per_hour is not None
            assert round(launch.cost_after_per_hour - launch.cost_now_per_hour, 2) == 1.76
            done = await run(runner, launch)
            assert done.state == "succeeded", done
            up = await watch.until(
                lambda s: (
                    bool(s.clusters)
                    and s.clusters[0].metrics is not None
                    and s.clusters[0].stale_s is None
                ),
                timeout=10,
            )
    cluster = up.clusters[0]
    assert (cluster.cluster.name, cluster.cluster.status) == ("ie-h3", "UP")
    assert cluster.cluster.instance_type == "h3-standard-88"
    assert cluster.metrics is not None and cluster.metrics.dialect is Dialect.LLAMACPP
    phases = [line.split(": ", 1)[1] for line in done.log[1:]]
    assert phases[0] == "Provisioning"
    assert phases[-1].startswith("Serving on port 8080")
