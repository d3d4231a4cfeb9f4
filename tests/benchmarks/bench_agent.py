"""What the replica agent costs: added latency, throughput, memory under slow streams.

    .venv/bin/python tests/benchmarks/bench_agent.py [--requests 3000] [--concurrency 16]
        [--seconds 5] [--streams 100]

Three processes on loopback, as on a replica: a minimal OpenAI-shaped backend (this script
with `--serve-backend`, answering at once so that only HTTP handling is timed), the agent
(`python -m wfdash.agent`), and the clients in this process. Every figure is measured in
the same run against the same backend reached directly, so the ratios do not depend on
how fast this machine is.

1. Added latency: the same small JSON completion, one at a time on a kept-alive
   connection, alternating direct and through the agent; median and p99 of each.
2. Throughput: `--concurrency` clients in a closed loop for `--seconds`, direct then
   through the agent; the ratio of completed requests. On a 2-core machine the agent
   competes with the backend and the clients for the cores, so this is a lower bound of
   what it does on a replica, where the backend's own work dwarfs both.
3. Memory: `--streams` clients that each open a stream of 8 MB the backend writes as
   fast as it can and read it at ~100 KB/s; the agent's resident memory (VmRSS) before and
   at its peak while they are backed up. Bounded buffers mean a few hundred KB per stream
   at most, not the stream.

A script that prints figures, not a test (pytest collects `test_*.py` only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
COMPLETION = (
    b'{"id":"cmpl-1","object":"text_completion","created":1700000000,"model":"m",'
    b'"choices":[{"text":" the model runs on ternary weights","index":0,'
    b'"finish_reason":"length"}],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}}'
)
REQUEST = b'{"prompt":"one two three","max_tokens":8}'
STREAM_BYTES = 8 * 1024 * 1024
STREAM_BLOCK = 16 * 1024
SLOW_READ = 2048  # bytes a slow client takes ...
SLOW_EVERY = 0.02  # ... this often (~100 KB/s)


# --------------------------------------------------------------------------- the backend


def serve_backend(port: int) -> None:
    async def complete(request: web.Request) -> web.StreamResponse:
        await request.read()
        if request.query.get("stream") != "big":
            return web.Response(body=COMPLETION, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        block = b"data: " + b"x" * (STREAM_BLOCK - 8) + b"\n\n"
        for _ in range(STREAM_BYTES // STREAM_BLOCK):
            await response.write(block)
        await response.write_eof()
        return response

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/v1/completions", complete)
    app.router.add_get("/health", health)
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, handler_cancellation=True
    )


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def process(args: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def wait_healthy(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url + "/health") as response:
                if response.status == 200:
                    return
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not come up")
        await asyncio.sleep(0.05)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- measurements


async def one(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.post(
        url + "/v1/completions", data=REQUEST, headers={"Content-Type": "application/json"}
    ) as response:
        body = await response.read()
    elapsed = time.perf_counter() - started
    assert response.status == 200 and body == COMPLETION, (response.status, body[:80])
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def latency(direct: str, agent: str, requests: int) -> tuple[list[float], list[float]]:
    connector = aiohttp.TCPConnector(limit=2)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(200):  # warm up both paths (connections, code paths)
            await one(session, direct)
            await one(session, agent)
        times_direct, times_agent = [], []
        for _ in range(requests):
            times_direct.append(await one(session, direct))
            times_agent.append(await one(session, agent))
    return times_direct, times_agent


async def throughput(url: str, concurrency: int, seconds: float) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop = time.perf_counter() + seconds
        done = 0

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await one(session, url)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


async def slow_stream(port: int, opened: asyncio.Event, stop: asyncio.Event) -> int:
    """A client with a small receive buffer that reads a stream slowly; bytes read."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    request = (
        b"POST /v1/completions?stream=big HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(REQUEST), REQUEST)
    )
    await loop.sock_sendall(sock, request)
    received = 0
    try:
        while not stop.is_set():
            chunk = await loop.sock_recv(sock, SLOW_READ)
            if not chunk:
                break
            received += len(chunk)
            opened.set()
            await asyncio.sleep(SLOW_EVERY)
    finally:
        sock.close()
    return received


async def memory(agent_pid: int, port: int, streams: int) -> tuple[int, int, int]:
    """(RSS before, peak RSS with `streams` slow streams, bytes the clients read), KiB."""
    before = rss_kib(agent_pid)
    stop = asyncio.Event()
    opened = [asyncio.Event() for _ in range(streams)]
    tasks = [asyncio.create_task(slow_stream(port, o, stop)) for o in opened]
    await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 60)
    peak = before
    for _ in range(30):  # 3 s with every stream backed up
        peak = max(peak, rss_kib(agent_pid))
        await asyncio.sleep(0.1)
    stop.set()
    received = sum(await asyncio.gather(*tasks))
    return before, peak, received


async def run(args: argparse.Namespace, backend_port: int, agent_port: int, agent_pid: int) -> None:
    direct = f"http://127.0.0.1:{backend_port}"
    agent = f"http://127.0.0.1:{agent_port}"
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, direct)
        await wait_healthy(session, agent)

    times_direct, times_agent = await latency(direct, agent, args.requests)
    med_d, med_a = statistics.median(times_direct), statistics.median(times_agent)
    p99_d, p99_a = percentile(times_direct, 0.99), percentile(times_agent, 0.99)
    print(f"latency, {args.requests} sequential JSON completions each way (ms):")
    print(f"  direct  median {med_d * 1e3:.3f}  p99 {p99_d * 1e3:.3f}")
    print(f"  agent   median {med_a * 1e3:.3f}  p99 {p99_a * 1e3:.3f}")
    print(f"  added   median {(med_a - med_d) * 1e3:.3f}  p99 {(p99_a - p99_d) * 1e3:.3f}")

    rate_direct = await throughput(direct, args.concurrency, args.seconds)
    cpu_before = cpu_seconds(agent_pid)
    rate_agent = await throughput(agent, args.concurrency, args.seconds)
    agent_cpu = cpu_seconds(agent_pid) - cpu_before
    print(f"throughput, {args.concurrency} concurrent clients for {args.seconds:g} s:")
    print(f"  direct {rate_direct:.0f} req/s, agent {rate_agent:.0f} req/s")
    print(f"  ratio  {rate_agent / rate_direct:.2f}")
    per_request = agent_cpu / (rate_agent * args.seconds) * 1e6
    print(f"  agent CPU {per_request:.0f} µs per relayed request")

    before, peak, received = await memory(agent_pid, agent_port, args.streams)
    print(f"memory, {args.streams} slow streaming clients (8 MB streams read at ~100 KB/s):")
    print(f"  agent RSS {before / 1024:.1f} MiB before, {peak / 1024:.1f} MiB at peak")
    print(
        f"  +{(peak - before) / args.streams:.0f} KiB per stream; "
        f"clients read {received / 2**20:.1f} MiB of {args.streams * STREAM_BYTES / 2**20:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--serve-backend", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_backend:
        serve_backend(args.serve_backend)
        return
    backend_port, agent_port = free_port(), free_port()
    backend = [sys.executable, __file__, "--serve-backend", str(backend_port)]
    agent = [
        sys.executable,
        "-m",
        "wfdash.agent",
        "--host",
        "127.0.0.1",
        "--port",
        str(agent_port),
        "--backend",
        f"http://127.0.0.1:{backend_port}",
        "--build-info",
        "",
        "--log-level",
        "warning",
    ]
    with process(backend), process(agent) as agent_proc:
        asyncio.run(run(args, backend_port, agent_port, agent_proc.pid))


if __name__ == "__main__":
    main()
