"""Full poll cycles (status + scrape + parse + derive) against N loopback replicas.

Serves N realistic ~50 KB vLLM payloads, one listening port per replica, from a separate
process (so this process's CPU time is the dashboard's alone), then runs poll cycles
for N = 20, 200, 1000 and prints per-cycle wall time and CPU seconds. It also times the
parse stage against prometheus_client's parser on the same payloads, in the same run.

    .venv/bin/python tests/benchmarks/bench_ingest.py [--sizes 20,200,1000] [--cycles 5]

Targets (issue #2): N=1000 in <= 1.0 s wall and <= 1.0 CPU-s per cycle on 2 cores; the
parse stage >= 8x faster than prometheus_client.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import resource
import statistics
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

VARIANTS = 6  # distinct payloads per replica, served in turn so counters move


def _payloads(seed: int) -> list[bytes]:
    from wfdash.sandbox.exposition import VllmCounters, render_vllm_metrics

    rng = random.Random(seed)
    counters = VllmCounters(created=1.7e9 + seed)
    bodies = []
    for _ in range(VARIANTS):
        for _ in range(rng.randint(5, 40)):
            counters.finished[rng.choice(("stop", "stop", "length", "abort"))] += 1
            counters.ttft.observe(rng.lognormvariate(-1.0, 0.8))
            counters.inter_token_latency.observe(rng.uniform(0.02, 0.09))
            counters.e2e_latency.observe(rng.uniform(1, 20))
            counters.prompt_tokens += rng.randint(20, 400)
            counters.generation_tokens += rng.randint(16, 256)
        counters.num_requests_running = rng.randint(0, 4)
        counters.kv_cache_usage = rng.random()
        bodies.append(render_vllm_metrics(counters).encode())
    return bodies


def _raise_fd_limit() -> None:
    """1000 listeners and 1000 client connections need more than the usual 1024 fds."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _serve(count: int, conn: Connection) -> None:
    """Child process: N listeners, each cycling through its payload variants."""
    _raise_fd_limit()

    async def main() -> None:
        servers = []
        ports = []
        templates = _payloads(0)
        for i in range(count):
            bodies = [
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                for body in templates
            ]
            served = [i % VARIANTS]

            async def handle(
                reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter,
                bodies: list[bytes] = bodies,
                served: list[int] = served,
            ) -> None:
                try:
                    while True:
                        await reader.readuntil(b"\r\n\r\n")
                        writer.write(bodies[served[0] % VARIANTS])
                        served[0] += 1
                        await writer.drain()
                except (asyncio.IncompleteReadError, ConnectionError):
                    pass
                finally:
                    writer.close()

            server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=64)
            servers.append(server)
            ports.append(server.sockets[0].getsockname()[1])
        conn.send(ports)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    asyncio.run(main())


class _Source:
    description = "bench"

    def __init__(self, ports: list[int]) -> None:
        replicas = [
            {
                "replica_id": i + 1,
                "name": f"bench-{i + 1}",
                "status": "READY",
                "version": 1,
                "endpoint": f"http://127.0.0.1:{port}",
                "is_spot": i % 3 == 0,
                "cloud": "GCP",
                "region": "us-central1",
                "infra": "GCP (us-central1-a)",
                "resources_str": "1x[spot](cpus=16, mem=64, c3d-standard-16, ...)",
            }
            for i, port in enumerate(ports)
        ]
        self.records = [{"name": "bench", "status": "READY", "replica_info": replicas}]

    async def fetch_services(self) -> list[Mapping[str, Any]]:
        return self.records

    async def fetch_clusters(self) -> list[Mapping[str, Any]]:
        return []


async def _cycles(ports: list[int], cycles: int) -> tuple[list[float], list[float], int]:
    from wfdash.collect.poller import Poller, PollerConfig
    from wfdash.collect.scrape import Scraper

    scraper = Scraper(timeout=10, concurrency=128)
    poller = Poller(_Source(ports), scraper, config=PollerConfig(status_interval=0))
    snapshot = await poller.cycle()  # warm-up: connections opened, histories started
    walls, cpus = [], []
    for _ in range(cycles):
        await asyncio.sleep(0.2)
        w0, c0 = time.perf_counter(), time.process_time()
        snapshot = await poller.cycle()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    await scraper.aclose()
    errors = snapshot.stats.scrape_errors
    assert snapshot.services[0].qps is not None, "rates must be derived in the benchmark"
    return walls, cpus, errors


def _parse_ratio(payloads: list[bytes], rounds: int) -> tuple[float, float]:
    from prometheus_client.parser import text_string_to_metric_families

    from wfdash.collect.dialects import parse_point

    texts = [p.decode() for p in payloads]
    t0 = time.perf_counter()
    for _ in range(rounds):
        for body in payloads:
            parse_point(body)
    ours = (time.perf_counter() - t0) / (rounds * len(payloads))
    t0 = time.perf_counter()
    for _ in range(rounds):
        for text in texts:
            for family in text_string_to_metric_families(text):
                for _sample in family.samples:
                    pass
    reference = (time.perf_counter() - t0) / (rounds * len(texts))
    return ours, reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20,200,1000")
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    _raise_fd_limit()

    payloads = _payloads(1)
    lines = payloads[0].count(b"\n")
    print(f"payload: {len(payloads[0]) / 1024:.1f} KB, {lines} lines (vLLM 0.11)")
    ours, reference = _parse_ratio(payloads, rounds=40)
    print(
        f"parse stage: wfdash {ours * 1e6:.0f} µs/payload, prometheus_client "
        f"{reference * 1e6:.0f} µs/payload -> {reference / ours:.1f}x faster"
    )
    print(f"{'N':>6} {'wall s/cycle':>13} {'CPU s/cycle':>12} {'MB/cycle':>9} {'errors':>7}")
    for size in (int(s) for s in args.sizes.split(",")):
        parent, child = mp.Pipe()
        server = mp.Process(target=_serve, args=(size, child), daemon=True)
        server.start()
        ports = parent.recv()
        try:
            walls, cpus, errors = asyncio.run(_cycles(ports, args.cycles))
        finally:
            parent.send("stop")
            server.join(timeout=10)
            if server.is_alive():
                server.kill()
        megabytes = size * len(payloads[0]) / 1e6
        print(
            f"{size:>6} {statistics.median(walls):>13.3f} {statistics.median(cpus):>12.3f} "
            f"{megabytes:>9.1f} {errors:>7}"
        )


if __name__ == "__main__":
    main()
