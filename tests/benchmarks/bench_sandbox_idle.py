"""CPU cost of the sandbox's emulated replicas, in % of one core.

    python tests/benchmarks/bench_sandbox_idle.py [--replicas 20] [--seconds 5] [--busy]

Starts a ReplicaHost with that many ready llama-server replicas and measures the process's
CPU time (`time.process_time()`) over the window. Idle, a replica is a listening socket and
should cost nothing. With `--busy`, each replica serves one streamed completion after
another at clock speed 50, and the figure includes the httpx clients in this process.
A script, not a test: pytest collects `test_*.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import httpx

from wfdash.sandbox.clock import SimClock
from wfdash.sandbox.replicas import Backend, EmulatedReplica, ReplicaHost, ReplicaSpec


async def keep_busy(client: httpx.AsyncClient, replica: EmulatedReplica) -> None:
    body = {"prompt": "one two three", "max_tokens": 64, "stream": True}
    while True:
        async with client.stream("POST", f"{replica.url}/v1/completions", json=body) as answer:
            async for _ in answer.aiter_raw():
                pass


async def measure(replicas: int, seconds: float, busy: bool) -> float:
    async with ReplicaHost(SimClock(50)) as host, httpx.AsyncClient(timeout=30) as client:
        started = [
            await host.start_replica(ReplicaSpec(Backend.BITNET, seed=i), load_seconds=0)
            for i in range(replicas)
        ]
        await asyncio.sleep(0.1)
        assert all(replica.ready for replica in started)
        loads = [asyncio.create_task(keep_busy(client, r)) for r in started] if busy else []
        await asyncio.sleep(0.5)  # settle
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        for load in loads:
            load.cancel()
        for load in loads:
            with contextlib.suppress(asyncio.CancelledError):
                await load
    return 100 * cpu / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--busy", action="store_true")
    args = parser.parse_args()
    percent = asyncio.run(measure(args.replicas, args.seconds, args.busy))
    state = "busy (streaming at speed 50)" if args.busy else "idle"
    print(f"{args.replicas} {state} replicas: {percent:.2f}% of one core")


if __name__ == "__main__":
    main()
