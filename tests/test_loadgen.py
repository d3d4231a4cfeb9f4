"""The load generator against real loopback listeners: its numbers are the replicas' numbers.

The replicas here are minimal fake completions endpoints (aiohttp), each counting what it
served and when, so the generator's ground truth can be checked against the other side
of the wire.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import socket
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from wfdash.sandbox.loadgen import (
    CANCELLED,
    NO_READY_REPLICA,
    LeastLoadBalancer,
    LoadGenerator,
    TrafficShape,
)


def steady(base_qps: float, **kwargs: Any) -> TrafficShape:
    """A flat rate: no daily swing, no bursts."""
    return TrafficShape(base_qps=base_qps, daily_amplitude=0.0, burst_every=None, **kwargs)


@dataclass
class Served:
    """One request as the replica saw it (wall-clock times)."""

    received_at: float
    first_at: float  # first token chunk written, or the JSON answer returned
    stream: bool
    prompt_words: int
    max_tokens: int

    @property
    def ttft(self) -> float:
        return self.first_at - self.received_at


@dataclass
class FakeReplica:
    """``mode``: "ok", "500", "garbage" (200 that is neither JSON nor SSE) or "hang"."""

    delay: float = 0.0  # before the first token
    token_gap: float = 0.0
    tokens: int = 3
    mode: str = "ok"
    received: int = 0
    served: list[Served] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        received_at = time.time()
        self.received += 1
        body = await request.json()
        if self.mode == "hang":
            await asyncio.sleep(60)
        if self.mode == "500":
            return web.Response(status=500, text="boom")
        if self.mode == "garbage":
            return web.Response(text="<html>not a completion</html>")
        await asyncio.sleep(self.delay)
        words = len(body["prompt"].split())
        if not body["stream"]:
            await asyncio.sleep(self.token_gap * (self.tokens - 1))
            self.served.append(Served(received_at, time.time(), False, words, body["max_tokens"]))
            return web.json_response(
                {
                    "object": "text_completion",
                    "choices": [
                        {"index": 0, "text": " x" * self.tokens, "finish_reason": "length"}
                    ],
                    "usage": {"prompt_tokens": words, "completion_tokens": self.tokens},
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        first_at = 0.0
        for i in range(self.tokens):
            if i:
                await asyncio.sleep(self.token_gap)
            finish = "length" if i == self.tokens - 1 else None
            chunk = {"choices": [{"index": 0, "text": f" t{i}", "finish_reason": finish}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            first_at = first_at or time.time()
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self.served.append(Served(received_at, first_at, True, words, body["max_tokens"]))
        return response


@asynccontextmanager
async def running(*replicas: FakeReplica) -> AsyncIterator[list[FakeReplica]]:
    async with AsyncExitStack() as stack:
        for replica in replicas:
            app = web.Application()
            app.router.add_post("/v1/completions", replica.handle)
            server = TestServer(app, host="127.0.0.1")
            await server.start_server(shutdown_timeout=0.5)
            stack.push_async_callback(server.close)
            replica.url = f"http://127.0.0.1:{server.port}"
        yield list(replicas)


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def _drain(gen: LoadGenerator, within: float = 3.0) -> None:
    """Stop the arrivals and wait for every request in flight to finish on its own."""
    gen.set_rate(0)
    deadline = time.monotonic() + within
    while gen.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert gen.in_flight == 0


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def test_rate_swings_through_the_day_and_bursts_as_configured() -> None:
    day = TrafficShape(base_qps=2.0, daily_amplitude=0.5, day_seconds=100.0, burst_every=None)
    assert day.rate_at(0) == 2.0
    assert math.isclose(day.rate_at(25), 3.0) and math.isclose(day.rate_at(75), 1.0)
    assert math.isclose(day.rate_at(125), 3.0)  # the day repeats
    assert day.peak_rate() == 3.0

    bursty = TrafficShape(
        base_qps=1.0, daily_amplitude=0.0, burst_every=10.0, burst_seconds=2.0, burst_factor=3.0
    )
    samples = [bursty.rate_at(i / 100) for i in range(100_000)]  # 1000 s
    assert set(samples) == {1.0, 3.0}
    onsets = sum(1 for a, b in itertools.pairwise(samples) if a < b)
    assert 80 <= onsets <= 100  # one burst start per 10 s window; neighbours may merge
    assert 0.15 <= samples.count(3.0) / len(samples) <= 0.201
    assert bursty.peak_rate() == 3.0

    same = TrafficShape(base_qps=1.0, daily_amplitude=0.0, burst_every=10.0, burst_seconds=2.0)
    other = TrafficShape(
        base_qps=1.0, daily_amplitude=0.0, burst_every=10.0, burst_seconds=2.0, burst_seed=1
    )
    assert [same.in_burst(i / 10) for i in range(2000)] == [
        bursty.in_burst(i / 10) for i in range(2000)
    ]
    assert [other.in_burst(i / 10) for i in range(2000)] != [
        bursty.in_burst(i / 10) for i in range(2000)
    ]

    for bad in ({"daily_amplitude": 1.5}, {"max_tokens": (8, 4)}, {"burst_every": 0.0}):
        with pytest.raises(ValueError):
            TrafficShape(**bad)


def test_least_load_picks_the_idle_replica_and_rotates_ties() -> None:
    ready = ["a", "b", "c"]
    lb = LeastLoadBalancer(lambda: ready)
    assert [lb.pick() for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    lb.begin("a")
    lb.begin("b")
    assert [lb.pick() for _ in range(2)] == ["c", "c"]
    lb.end("a")
    assert [lb.pick() for _ in range(3)] == ["a", "c", "a"]

    ready.remove("b")  # b retires with a request in flight: its count goes at once...
    assert lb.pick() == "c" and lb.in_flight("b") == 0
    lb.end("b")  # ...and its late completion is ignored
    ready.append("b")
    assert lb.in_flight("b") == 0
    assert sorted(str(lb.pick()) for _ in range(3)) == ["a", "b", "c"]

    assert LeastLoadBalancer(list).pick() is None


async def test_arrivals_follow_the_rate_and_stop_when_it_drops_to_zero() -> None:
    async with running(FakeReplica()) as [replica]:
        gen = LoadGenerator(lambda: [replica.url], steady(20.0), seed=3)
        await gen.start()
        await asyncio.sleep(2.0)
        await _drain(gen)
        sent = gen.sent
        await asyncio.sleep(0.2)
        assert gen.sent == sent  # no arrivals at rate zero
        await gen.stop()
    expected = 20.0 * 2.0
    assert abs(sent - expected) <= 3 * math.sqrt(expected)  # Poisson: sd = sqrt(mean)
    assert replica.received == sent == len(gen.records)
    # Poisson arrivals: exponential gaps, whose spread equals their mean.
    times = sorted(r.sent_at for r in gen.records)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 0.6 <= statistics.stdev(gaps) / statistics.mean(gaps) <= 1.4


async def test_set_rate_wakes_an_idle_generator_at_once() -> None:
    async with running(FakeReplica()) as [replica]:
        gen = LoadGenerator(lambda: [replica.url], steady(0.0))
        await gen.start()
        await asyncio.sleep(0.1)
        assert gen.sent == 0
        gen.set_rate(50.0)
        await asyncio.sleep(0.3)
        await gen.stop()
    assert gen.sent >= 5 and all(r.ok for r in gen.records)


async def test_least_load_sends_more_to_the_fast_replica() -> None:
    async with running(FakeReplica(delay=0.4), FakeReplica()) as [slow, fast]:
        gen = LoadGenerator(lambda: [slow.url, fast.url], steady(25.0), seed=5)
        await gen.start()
        await asyncio.sleep(1.0)
        await _drain(gen)
        await gen.stop()
    assert slow.received >= 1
    assert fast.received >= 3 * slow.received


async def test_ground_truth_matches_what_the_replicas_saw() -> None:
    replicas = [FakeReplica(delay=0.08, token_gap=0.01) for _ in range(2)]
    shape = steady(20.0, prompt_words=(5, 9), max_tokens=(2, 4))
    async with running(*replicas):
        gen = LoadGenerator(lambda: [r.url for r in replicas], shape, seed=7)
        t0 = time.time()
        await gen.start()
        await asyncio.sleep(1.0)
        await _drain(gen)
        t1 = time.time()
        await gen.stop()

    served = [s for r in replicas for s in r.served]
    assert len(served) > 10 and all(r.ok for r in gen.records)
    # What each replica's request counter would say, request for request.
    assert math.isclose(gen.qps_between(t0, t1) * (t1 - t0), len(served))
    for replica in replicas:
        assert sum(1 for r in gen.records if r.target == replica.url) == len(replica.served)
    assert gen.qps_between(t1, t1 + 10) == 0.0
    assert len(gen.completed_between(t0, t1)) == len(gen.records)

    # TTFT: never less than the replica's own first-chunk delay, and within a few ms of it.
    server_ttft = [s.ttft for s in served]
    for q in (0.0, 0.5, 0.9):
        client = gen.ttft_quantile(q, t0, t1)
        assert client is not None
        assert 0 <= client - _quantile(server_ttft, q) < 0.04
    assert gen.ttft_quantile(0.5, t1, t1 + 10) is None
    streamed = [r.ttft for r in gen.records if r.stream and r.ttft is not None]
    assert streamed and 0.08 <= statistics.median(streamed) < 0.11

    # The requests are what the shape asked for; tokens come from usage or the chunks.
    assert {s.stream for s in served} == {True, False}
    assert all(5 <= s.prompt_words <= 9 and 2 <= s.max_tokens <= 4 for s in served)
    assert all(r.completion_tokens == 3 for r in gen.records)
    assert all(r.prompt_tokens is None for r in gen.records if r.stream)
    assert all(5 <= (r.prompt_tokens or 0) <= 9 for r in gen.records if not r.stream)


async def test_no_ready_replica_is_a_recorded_503_and_nothing_is_sent() -> None:
    gen = LoadGenerator(list, steady(50.0))
    await gen.start()
    await asyncio.sleep(0.3)
    await gen.stop()
    assert gen.sent == 0 and gen.no_targets == len(gen.records) > 0
    assert all(r.status == 503 and r.error == NO_READY_REPLICA for r in gen.records)
    assert all(r.target == "" and not r.ok and r.ttft is None for r in gen.records)


async def test_failures_are_recorded_never_raised() -> None:
    shape = steady(30.0)
    async with running(FakeReplica(mode="500"), FakeReplica(mode="garbage")) as [broken, junk]:
        gens = {
            "refused": LoadGenerator(lambda: [_closed_port_url()], shape),
            "500": LoadGenerator(lambda: [broken.url], shape),
            "garbage": LoadGenerator(lambda: [junk.url], shape),
        }
        for gen in gens.values():
            await gen.start()
        await asyncio.sleep(0.4)
        for gen in gens.values():
            await _drain(gen)
            await gen.stop()
    for name, gen in gens.items():
        assert gen.records and not any(r.ok for r in gen.records), name
    assert all(r.error == "connection refused" for r in gens["refused"].records)
    assert all(r.status == 500 and "500" in (r.error or "") for r in gens["500"].records)
    for record in gens["garbage"].records:
        assert record.status == 200 and "unparsable" in (record.error or "")
    assert broken.received == gens["500"].sent and junk.received == gens["garbage"].sent


async def test_timeouts_are_recorded() -> None:
    async with running(FakeReplica(mode="hang")) as [hung]:
        gen = LoadGenerator(lambda: [hung.url], steady(30.0), timeout=0.2)
        await gen.start()
        await asyncio.sleep(0.2)
        await _drain(gen, within=1.0)
        await gen.stop()
    assert gen.records and all(r.error == "timeout after 0.2s" for r in gen.records)
    assert all(r.done_at is not None and r.done_at - r.sent_at >= 0.2 for r in gen.records)


async def test_a_crash_of_the_arrivals_surfaces_at_stop() -> None:
    def broken_targets() -> list[str]:
        raise RuntimeError("inventory unavailable")

    gen = LoadGenerator(broken_targets, steady(50.0))
    await gen.start()
    await asyncio.sleep(0.1)
    with pytest.raises(RuntimeError, match="inventory unavailable"):
        await gen.stop()


async def test_stop_cancels_requests_in_flight_and_leaves_nothing_behind() -> None:
    async with running(FakeReplica(mode="hang")) as [hung]:
        gen = LoadGenerator(lambda: [hung.url], steady(40.0))
        await gen.start()
        await asyncio.sleep(0.3)
        assert gen.in_flight > 0
        await gen.stop()
        ours = [
            t
            for t in asyncio.all_tasks()
            if "LoadGenerator" in repr(t.get_coro()) or t.get_name() == "wfdash-loadgen"
        ]
        assert ours == []
        assert gen.in_flight == 0 and gen.balancer.in_flight(hung.url) == 0
        assert len(gen.records) == gen.sent == hung.received
        assert all(r.error == CANCELLED and r.done_at is None for r in gen.records)
        await gen.stop()  # idempotent
        await gen.start()  # and restartable
        await asyncio.sleep(0.1)
        await gen.stop()
