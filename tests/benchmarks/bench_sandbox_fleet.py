"""CPU use of the whole sandbox fleet: SkyServe emulation + N replicas, traffic idle.

Unlike bench_sandbox_idle.py (the replica listeners alone), this runs the complete
Sandbox as `wfdash demo` does — the controller tick, readiness probes every 10 s,
autoscaler decisions — with the load generator off, and then with the demo's traffic.

    .venv/bin/python tests/benchmarks/bench_sandbox_fleet.py [--replicas 20] [--seconds 10]

Target (issue #3): 20 replicas with traffic idle under 10% of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from wfdash.sandbox.fleet import Sandbox, SandboxConfig
from wfdash.sandbox.skyserve import ReplicaPolicy


async def _measure(replicas: int, seconds: float, traffic: bool) -> tuple[float, int]:
    base = SandboxConfig()
    config = SandboxConfig(
        pool_hosts=replicas,
        policy=ReplicaPolicy(
            min_replicas=replicas, max_replicas=replicas, target_qps_per_replica=None
        ),
        traffic=base.traffic if traffic else None,
        clusters=(),
        preemptions_per_hour=0,
    )
    sandbox = Sandbox(config)
    await sandbox.start()
    try:
        deadline = time.monotonic() + 30
        while len(sandbox.ready_urls()) < replicas and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        ready = len(sandbox.ready_urls())
        c0, w0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu = (time.process_time() - c0) / (time.perf_counter() - w0)
    finally:
        await sandbox.close()
    return cpu, ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    for traffic in (False, True):
        cpu, ready = asyncio.run(_measure(args.replicas, args.seconds, traffic))
        label = "demo traffic" if traffic else "traffic idle"
        print(
            f"{ready} ready replicas, {label}: {cpu * 100:.2f}% of one core over {args.seconds:g} s"
        )


if __name__ == "__main__":
    main()
