"""The emulated replicas against their real loopback listeners, through httpx.

Requests go to `replica.url`, the wfdash agent in front of the engine, as on a real
replica; `replica.backend_url` is the engine's own port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest

from tests.test_agent_proxy import running_agent
from wfdash.collect.derive import CounterHistory
from wfdash.collect.dialects import derive_metrics, parse_point
from wfdash.collect.promtext import parse_exposition
from wfdash.sandbox import replicas
from wfdash.sandbox.clock import SimClock
from wfdash.sandbox.replicas import (
    Backend,
    EmulatedReplica,
    Fault,
    ReplicaHost,
    ReplicaSpec,
    profile_for,
)

LLAMA_FAMILIES = (
    "llamacpp:prompt_tokens_total",
    "llamacpp:prompt_seconds_total",
    "llamacpp:tokens_predicted_total",
    "llamacpp:n_decode_total",
    "llamacpp:n_busy_slots_per_decode",
    "llamacpp:prompt_tokens_seconds",
    "llamacpp:predicted_tokens_seconds",
    "llamacpp:requests_processing",
    "llamacpp:requests_deferred",
)
VLLM_FAMILIES = (
    "vllm:request_success_total",
    "vllm:time_to_first_token_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:generation_tokens_total",
    "vllm:prompt_tokens_total",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
)
Samples = dict[str, list[tuple[dict[str, str], float]]]
BITNET = ReplicaSpec(Backend.BITNET)
VLLM = ReplicaSpec(Backend.VLLM)
C3D16 = profile_for("c3d-standard-16", Backend.BITNET)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as http:
        yield http


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def start_ready(host: ReplicaHost, spec: ReplicaSpec) -> EmulatedReplica:
    replica = await host.start_replica(spec, load_seconds=0)
    await until(lambda: replica.ready)
    return replica


async def complete(
    client: httpx.AsyncClient, replica: EmulatedReplica, prompt: str = "hi", **params: Any
) -> dict[str, Any]:
    body = {"prompt": prompt, "max_tokens": 8, "ignore_eos": True} | params
    response = await client.post(f"{replica.url}/v1/completions", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def scrape(client: httpx.AsyncClient, replica: EmulatedReplica) -> Samples:
    response = await client.get(f"{replica.url}/metrics")
    assert response.status_code == 200
    families = LLAMA_FAMILIES if replica.backend is Backend.BITNET else VLLM_FAMILIES
    samples = parse_exposition(response.text, families).samples
    return {name: [(dict(s.labels), s.value) for s in rows] for name, rows in samples.items()}


def value(samples: Samples, name: str, **labels: str) -> float:
    matching = [v for got, v in samples[name] if labels.items() <= got.items()]
    assert len(matching) == 1, (name, labels, samples.get(name))
    return matching[0]


async def stream_lines(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> list[str]:
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        return [line async for line in response.aiter_lines() if line]


def connection_refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


# --------------------------------------------------------------------------- profiles


def test_profiles_come_from_the_seed_table() -> None:
    assert (C3D16.prompt_tps, C3D16.gen_tps, C3D16.load_seconds) == (13.15, 12.64, 0.674)
    assert profile_for("no-such-type", Backend.BITNET).gen_tps == C3D16.gen_tps
    assert profile_for(None, Backend.BITNET).gen_tps == C3D16.gen_tps
    assert profile_for("16CPU--128GB", Backend.BITNET).gen_tps == pytest.approx(
        C3D16.gen_tps * 1.2, rel=0.01
    )
    assert profile_for("r7a.2xlarge", Backend.BITNET).gen_tps == pytest.approx(
        C3D16.gen_tps / 2, rel=0.01
    )
    assert 60 <= profile_for("c3d-standard-90", Backend.BITNET).gen_tps <= 70
    assert 40 <= profile_for("h3-standard-88", Backend.BITNET).gen_tps <= 50
    vllm = profile_for("c3d-standard-16", Backend.VLLM)
    assert vllm.gen_tps == C3D16.gen_tps and vllm.max_batch > 1
    assert (C3D16.slots, C3D16.max_batch) == (1, 1)


# --------------------------------------------------------------------------- llama-server


async def test_health_answers_503_while_loading_then_200(client: httpx.AsyncClient) -> None:
    async with ReplicaHost(SimClock(50)) as host:
        replica = await host.start_replica(
            ReplicaSpec(Backend.BITNET, slots=2), load_seconds=5
        )  # 0.1 s real
        response = await client.get(f"{replica.url}/health")
        assert response.status_code == 503
        assert response.json() == {
            "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}
        }
        response = await client.post(f"{replica.url}/v1/completions", json={"prompt": "x"})
        assert response.status_code == 503
        assert not replica.ready
        await until(lambda: replica.ready)
        response = await client.get(f"{replica.url}/health")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})
        props = (await client.get(f"{replica.url}/props")).json()
        assert props["total_slots"] == 2
        assert props["default_generation_settings"]["n_ctx"] > 0
        assert props["default_generation_settings"]["model"].endswith(".gguf")
        models = (await client.get(f"{replica.url}/v1/models")).json()
        assert models["data"][0]["id"] == props["default_generation_settings"]["model"]


async def test_json_completion_carries_usage_and_timings_of_the_profile(
    client: httpx.AsyncClient,
) -> None:
    speed, n = 50.0, 8
    async with ReplicaHost(SimClock(speed)) as host:
        replica = await start_ready(host, BITNET)
        started = time.perf_counter()
        answer = await complete(client, replica, "one two three four five", max_tokens=n)
        elapsed = time.perf_counter() - started
    choice = answer["choices"][0]
    assert (choice["finish_reason"], answer["object"]) == ("length", "text_completion")
    usage, timings = answer["usage"], answer["timings"]
    assert usage == {"prompt_tokens": 6, "completion_tokens": n, "total_tokens": 6 + n}
    assert timings["prompt_n"] == 6 and timings["predicted_n"] == n
    token_ms = 1e3 / (C3D16.gen_tps * speed)
    prompt_ms = 6e3 / (C3D16.prompt_tps * speed)
    assert timings["prompt_ms"] == pytest.approx(prompt_ms, rel=1e-6)
    assert timings["prompt_per_second"] == pytest.approx(C3D16.prompt_tps * speed, rel=1e-6)
    # As in b3920: the generation time runs from the first token to the last, but
    # predicted_n counts the first token too.
    assert timings["predicted_ms"] == pytest.approx((n - 1) * token_ms, rel=1e-6)
    assert timings["predicted_per_second"] == pytest.approx(
        C3D16.gen_tps * speed * n / (n - 1), rel=1e-6
    )
    assert timings["predicted_per_token_ms"] == pytest.approx(timings["predicted_ms"] / n)
    nominal = (prompt_ms + (n - 1) * token_ms) / 1e3
    assert nominal * 0.95 <= elapsed <= nominal + 0.2
    assert replica.stats.completed == 1 and replica.stats.completion_tokens == n


async def test_stream_sends_a_chunk_per_token_then_done_and_matches_the_json_text(
    client: httpx.AsyncClient,
) -> None:
    n = 6
    async with ReplicaHost(SimClock(50)) as host:
        streaming = await start_ready(host, BITNET)
        plain = await start_ready(host, BITNET)  # same seed: same text
        lines = await stream_lines(
            client, streaming.url, {"prompt": "hello", "max_tokens": n, "stream": True}
        )
        answer = await complete(client, plain, "hello", max_tokens=n, ignore_eos=False)
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    reason = answer["choices"][0]["finish_reason"]
    tokens = answer["usage"]["completion_tokens"]
    assert len(chunks) == tokens <= n
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (tokens - 1) + [reason]
    assert "".join(c["choices"][0]["text"] for c in chunks) == answer["choices"][0]["text"]
    assert chunks[-1]["usage"] == answer["usage"]
    assert chunks[-1]["timings"]["predicted_n"] == tokens


async def test_one_slot_serves_requests_one_after_another(client: httpx.AsyncClient) -> None:
    speed, n = 10.0, 10
    prompt = "one two three"  # 4 tokens
    one_request = (4 / C3D16.prompt_tps + (n - 1) / C3D16.gen_tps) / speed  # ~0.1 s
    async with ReplicaHost(SimClock(speed)) as host:
        replica = await start_ready(host, BITNET)
        finished: list[float] = []

        async def timed() -> None:
            await complete(client, replica, prompt, max_tokens=n)
            finished.append(time.perf_counter())

        started = time.perf_counter()
        tasks = [asyncio.create_task(timed()) for _ in range(3)]
        await until(lambda: replica.in_flight == 3)
        await asyncio.sleep(one_request / 2)
        during = await scrape(client, replica)
        await asyncio.gather(*tasks)
    assert value(during, "llamacpp:requests_processing") == 1
    assert value(during, "llamacpp:requests_deferred") == 2
    gaps = [b - a for a, b in zip([started, *finished], finished, strict=False)]
    assert all(gap >= one_request * 0.8 for gap in gaps), gaps
    ttft = replica.stats.ttft_seconds
    prefill = 4 / C3D16.prompt_tps / speed
    assert ttft == pytest.approx([prefill + i * one_request for i in range(3)], abs=0.02)


async def test_llamacpp_counters_match_what_was_served(client: httpx.AsyncClient) -> None:
    async with ReplicaHost(SimClock(50)) as host:
        replica = await start_ready(host, BITNET)
        before = await client.get(f"{replica.url}/metrics")
        assert "llamacpp:n_busy_slots_per_decode -nan\n" in before.text
        answers = [
            await complete(client, replica, "word " * words, max_tokens=5, ignore_eos=False)
            for words in (1, 4, 9)
        ]
        first = await scrape(client, replica)
        second = await scrape(client, replica)
    prompt_tokens = sum(a["usage"]["prompt_tokens"] for a in answers)
    completion_tokens = sum(a["usage"]["completion_tokens"] for a in answers)
    assert value(first, "llamacpp:prompt_tokens_total") == prompt_tokens
    assert value(first, "llamacpp:tokens_predicted_total") == completion_tokens
    assert value(first, "llamacpp:n_decode_total") == completion_tokens  # a step per token
    assert value(first, "llamacpp:n_busy_slots_per_decode") == 1
    prompt_seconds = sum(a["timings"]["prompt_ms"] for a in answers) / 1e3
    assert value(first, "llamacpp:prompt_seconds_total") == pytest.approx(prompt_seconds, rel=1e-5)
    # The throughput gauges cover the window since the previous /metrics call.
    assert value(first, "llamacpp:prompt_tokens_seconds") == pytest.approx(
        prompt_tokens / prompt_seconds, rel=1e-5
    )
    assert value(first, "llamacpp:predicted_tokens_seconds") > 0
    assert value(second, "llamacpp:prompt_tokens_seconds") == 0
    assert value(second, "llamacpp:predicted_tokens_seconds") == 0
    assert value(second, "llamacpp:prompt_tokens_total") == prompt_tokens


async def test_llamacpp_metrics_wait_for_the_decode_step_but_health_does_not(
    client: httpx.AsyncClient,
) -> None:
    speed = 10.0
    prompt = "word " * 40  # 52 tokens: a ~0.4 s prefill step at this speed
    async with ReplicaHost(SimClock(speed)) as host:
        replica = await start_ready(host, BITNET)
        task = asyncio.create_task(complete(client, replica, prompt, max_tokens=1))
        await until(lambda: replica.in_flight == 1)
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        await client.get(f"{replica.url}/health")
        health_seconds = time.perf_counter() - started
        metrics = await scrape(client, replica)
        metrics_seconds = time.perf_counter() - started - health_seconds
        await task
    # The prefill step takes ~0.35 s: /metrics waits for it, /health must not (the bound
    # leaves a loaded CI machine room without letting a waiting /health pass).
    assert health_seconds < 0.2 < metrics_seconds
    assert value(metrics, "llamacpp:prompt_tokens_total") == 52  # the step it waited for


# --------------------------------------------------------------------------- vLLM


async def test_vllm_counts_finished_requests_by_reason(client: httpx.AsyncClient) -> None:
    async with ReplicaHost(SimClock(50)) as host:
        replica = await start_ready(host, ReplicaSpec(Backend.VLLM, seed=1))
        assert (await client.get(f"{replica.url}/health")).content == b""
        answers = [
            await complete(client, replica, "a b c", max_tokens=6, ignore_eos=False)
            for _ in range(10)
        ]
        metrics = await scrape(client, replica)
    reasons = Counter(a["choices"][0]["finish_reason"] for a in answers)
    assert set(reasons) == {"stop", "length"}
    for reason in ("stop", "length", "abort", "error"):
        got = value(metrics, "vllm:request_success_total", finished_reason=reason)
        assert got == reasons[reason]
    assert value(metrics, "vllm:time_to_first_token_seconds_count") == 10
    assert value(metrics, "vllm:e2e_request_latency_seconds_count") == 10
    assert value(metrics, "vllm:request_queue_time_seconds_sum") == pytest.approx(0, abs=1e-9)
    generated = sum(a["usage"]["completion_tokens"] for a in answers)
    assert value(metrics, "vllm:generation_tokens_total") == generated
    assert value(metrics, "vllm:inter_token_latency_seconds_count") == generated - 10
    assert value(metrics, "vllm:prompt_tokens_total") == 10 * 4


async def test_vllm_batches_concurrent_requests(client: httpx.AsyncClient) -> None:
    async with ReplicaHost(SimClock(10)) as host:
        replica = await start_ready(host, VLLM)
        started = time.perf_counter()
        await complete(client, replica)
        one = time.perf_counter() - started
        started = time.perf_counter()
        tasks = [asyncio.create_task(complete(client, replica)) for _ in range(4)]
        await until(lambda: replica.in_flight == 4)
        await asyncio.sleep(one / 2)
        during = await scrape(client, replica)
        await asyncio.gather(*tasks)
        four = time.perf_counter() - started
        after = await scrape(client, replica)
    assert value(during, "vllm:num_requests_running") == 4
    assert value(during, "vllm:num_requests_waiting") == 0
    assert four < 2 * one, (one, four)
    assert value(after, "vllm:time_to_first_token_seconds_count") == 5
    assert value(after, "vllm:request_success_total", finished_reason="length") == 5


async def test_vllm_counts_an_abort_when_the_client_leaves_mid_stream(
    client: httpx.AsyncClient,
) -> None:
    async with ReplicaHost(SimClock(10)) as host:
        replica = await start_ready(host, VLLM)
        body = {"prompt": "hi", "max_tokens": 500, "stream": True}
        async with client.stream("POST", f"{replica.url}/v1/completions", json=body) as response:
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("data: ")
        await until(lambda: replica.in_flight == 0)
        metrics = await scrape(client, replica)
    assert value(metrics, "vllm:request_success_total", finished_reason="abort") == 1
    assert value(metrics, "vllm:request_success_total", finished_reason="length") == 0
    assert (replica.stats.aborted, replica.stats.completed) == (1, 0)


async def test_vllm_stream_sends_usage_only_when_asked(client: httpx.AsyncClient) -> None:
    async with ReplicaHost(SimClock(50)) as host:
        replica = await start_ready(host, VLLM)
        body: dict[str, Any] = {"prompt": "hi", "max_tokens": 3, "stream": True, "ignore_eos": True}
        plain = await stream_lines(client, replica.url, body)
        body["stream_options"] = {"include_usage": True}
        with_usage = await stream_lines(client, replica.url, body)
    assert len(plain) == 3 + 1 and plain[-1] == "data: [DONE]"
    assert all("usage" not in line for line in plain)
    assert len(with_usage) == 3 + 2
    usage_chunk = json.loads(with_usage[-2].removeprefix("data: "))
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 3


# --------------------------------------------------------------------------- faults


async def healthy_latency(client: httpx.AsyncClient, replica: EmulatedReplica) -> float:
    """The slowest of a few /health and /metrics calls to a healthy replica."""
    worst = 0.0
    for path in ("/health", "/metrics") * 3:
        started = time.perf_counter()
        response = await client.get(replica.url + path)
        worst = max(worst, time.perf_counter() - started)
        assert response.status_code == 200
    return worst


@pytest.mark.parametrize("fault", [f for f in Fault if f is not Fault.NONE])
async def test_a_fault_does_not_delay_a_healthy_replica(
    client: httpx.AsyncClient, fault: Fault
) -> None:
    async with ReplicaHost(SimClock(50)) as host:
        faulty = await start_ready(host, BITNET)
        healthy = await start_ready(host, BITNET)
        faulty.set_fault(fault)

        async def hit_faulty() -> None:
            for path in ("/metrics", "/health"):
                with contextlib.suppress(httpx.HTTPError):
                    await client.get(faulty.url + path, timeout=0.5)

        background = [asyncio.create_task(hit_faulty()) for _ in range(4)]
        await asyncio.sleep(0.02)
        worst = await healthy_latency(client, healthy)
        await asyncio.gather(*background)
    # A fault that blocked the event loop would hold the healthy replica up for at least
    # the faulty calls' 0.5 s timeout (HANG) or 5 s (SLOW_METRICS). The bound sits below
    # that, with room for a loaded CI machine (0.1 s was missed once at 0.32 s under load).
    assert worst < 0.4


async def test_hang_never_answers_any_endpoint(client: httpx.AsyncClient) -> None:
    async with ReplicaHost(SimClock(50)) as host:
        replica = await start_ready(host, BITNET)
        replica.set_fault(Fault.HANG)
        for path in ("/health", "/metrics"):
            with pytest.raises(httpx.ReadTimeout):
                await client.get(replica.url + path, timeout=0.2)
        with pytest.raises(httpx.ReadTimeout):
            await client.post(replica.url + "/v1/completions", json={"prompt": "x"}, timeout=0.2)
        replica.set_fault(Fault.NONE)
        assert (await client.get(replica.url + "/health")).status_code == 200


async def test_http_500_hits_metrics_and_completions_not_health(
    client: httpx.AsyncClient,
) -> None:
    async with ReplicaHost(SimClock(50)) as host:
        replica = await start_ready(host, BITNET)
        replica.set_fault(Fault.HTTP_500)
        assert (await client.get(replica.url + "/metrics")).status_code == 500
        response = await client.post(replica.url + "/v1/completions", json={"prompt": "x"})
        assert response.status_code == 500
        assert response.json()["error"]["code"] == 500
        assert (await client.get(replica.url + "/health")).status_code == 200
    assert replica.stats.errors == 1


async def test_garbage_metrics_hold_no_samples(client: httpx.AsyncClient) -> None:
    async with ReplicaHost(SimClock(50)) as host:
        replica = await start_ready(host, BITNET)
        replica.set_fault(Fault.GARBAGE)
        bodies = [(await client.get(replica.url + "/metrics")).content for _ in range(6)]
        await complete(client, replica)  # completions are unaffected
    assert any(body.startswith(b"<html>") for body in bodies)
    assert any(not body.startswith(b"<html>") for body in bodies)
    for body in bodies:
        assert not parse_exposition(body, LLAMA_FAMILIES).samples


async def test_close_drops_the_connection_without_an_answer(client: httpx.AsyncClient) -> None:
    async with ReplicaHost(SimClock(50)) as host:
        replica = await start_ready(host, BITNET)
        replica.set_fault(Fault.CLOSE)
        for path in ("/health", "/metrics"):
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(replica.url + path)


async def test_slow_metrics_answer_late_while_health_stays_fast(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replicas, "SLOW_METRICS_DELAY", 0.4)
    async with ReplicaHost(SimClock(50)) as host:
        replica = await start_ready(host, BITNET)
        replica.set_fault(Fault.SLOW_METRICS)
        with pytest.raises(httpx.ReadTimeout):
            await client.get(replica.url + "/metrics", timeout=0.1)
        started = time.perf_counter()
        assert (await client.get(replica.url + "/health")).status_code == 200
        assert time.perf_counter() - started < 0.1
        metrics = await scrape(client, replica)
        assert time.perf_counter() - started >= 0.4
    assert value(metrics, "llamacpp:n_decode_total") == 0


# --------------------------------------------------------------------------- lifecycle


async def test_stopping_a_replica_ends_its_requests_and_closes_its_port(
    client: httpx.AsyncClient,
) -> None:
    async with ReplicaHost(SimClock(10)) as host:
        doomed = await start_ready(host, BITNET)
        survivor = await start_ready(host, VLLM)
        body = {"prompt": "hi", "max_tokens": 500, "stream": True}
        task = asyncio.create_task(stream_lines(client, doomed.url, body))
        await until(lambda: doomed.in_flight == 1)
        await host.stop_replica(doomed)
        with pytest.raises(httpx.HTTPError):
            await asyncio.wait_for(task, 1)
        assert host.replicas == [survivor]
        assert connection_refused(doomed.port)
        assert (await client.get(survivor.url + "/health")).status_code == 200


async def test_close_leaves_no_port_listening(client: httpx.AsyncClient) -> None:
    host = ReplicaHost(SimClock(50))
    started = [await start_ready(host, spec) for spec in (BITNET, VLLM, BITNET)]
    started[0].set_fault(Fault.HANG)
    hung = asyncio.create_task(client.get(started[0].url + "/health"))
    await complete(client, started[1])
    await asyncio.sleep(0.02)
    await host.close()
    assert host.replicas == []
    assert all(connection_refused(replica.port) for replica in started)
    assert all(connection_refused(replica.backend_port) for replica in started)
    with pytest.raises(httpx.HTTPError):
        await hung
    assert started[1].stats.completed == 1


# --------------------------------------------------------------------------- the agent


def agent_value(text: str, line_start: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(line_start + " ")]
    return float(line.rsplit(" ", 1)[1])


async def test_the_agent_fronts_the_engine_and_measures_it(client: httpx.AsyncClient) -> None:
    spec = replace(BITNET, cache_version="v5", cache_hit=False, build_seconds=300.0)
    async with ReplicaHost(SimClock(50)) as host:
        replica = await start_ready(host, spec)
        assert replica.port != replica.backend_port
        assert replica.agent is not None
        answers = [await complete(client, replica, max_tokens=4) for _ in range(3)]
        await stream_lines(client, replica.url, {"prompt": "hi", "max_tokens": 3, "stream": True})
        assert (await client.get(replica.url + "/v1/models")).status_code == 200
        assert (await client.get(replica.url + "/props")).json()["total_slots"] == 1
        text = (await client.get(replica.url + "/metrics")).text
        direct = (await client.get(replica.backend_url + "/metrics")).text
    completions = '{route="/v1/completions",outcome="ok"}'
    assert agent_value(text, f"wfdash_agent_requests_total{completions}") == 4
    assert agent_value(text, "wfdash_agent_time_to_first_token_seconds_count") == 4
    assert agent_value(text, "wfdash_agent_backend_metrics_up") == 1
    generated = sum(a["usage"]["completion_tokens"] for a in answers) + 3
    assert agent_value(text, "wfdash_agent_completion_tokens_total") == generated
    assert (
        'wfdash_agent_build_info{backend="bitnet",model="falcon3-7b-1.58bit",quant_type="i2_s",'
        'cache_version="v5",cache="miss",build_seconds="300"} 1'
    ) in text
    # The engine's own families follow, as the engine serves them.
    assert text.index("llamacpp:n_decode_total") > text.index("wfdash_agent_start_time_seconds")
    tail = text[text.index("# HELP llamacpp:") :]
    assert tail.splitlines()[:6] == direct.splitlines()[:6]
    assert replica.stats.completed == 4


async def test_the_agents_health_follows_the_engine_loading(client: httpx.AsyncClient) -> None:
    async with ReplicaHost(SimClock(50)) as host:
        replica = await host.start_replica(BITNET, load_seconds=5)  # 0.1 s real
        loading = await client.get(replica.url + "/health")
        assert loading.status_code == 503
        assert loading.json()["error"]["message"] == "Loading model"
        await until(lambda: replica.ready)
        assert (await client.get(replica.url + "/health")).status_code == 200


@pytest.mark.parametrize("fault", [Fault.HTTP_500, Fault.GARBAGE, Fault.CLOSE])
async def test_engine_faults_behind_the_agent(client: httpx.AsyncClient, fault: Fault) -> None:
    """The agent answers /metrics with its own families, says the engine's are missing,
    and relays (or reports) what the engine does to completions."""
    async with ReplicaHost(SimClock(50)) as host:
        replica = await start_ready(host, BITNET)
        await complete(client, replica)
        replica.set_backend_fault(fault)
        metrics = await client.get(replica.url + "/metrics")
        completion = await client.post(replica.url + "/v1/completions", json={"prompt": "x"})
        text = (await client.get(replica.url + "/metrics")).text
    assert metrics.status_code == 200
    assert agent_value(metrics.text, "wfdash_agent_backend_metrics_up") == 0
    assert "llamacpp:" not in metrics.text
    ok = agent_value(text, 'wfdash_agent_requests_total{route="/v1/completions",outcome="ok"}')
    if fault is Fault.GARBAGE:  # a /metrics fault only
        assert completion.status_code == 200
        assert ok == 2
    else:
        assert ok == 1
        assert completion.status_code == (500 if fault is Fault.HTTP_500 else 502)
        failed = '{route="/v1/completions",outcome="server_error"}'
        assert agent_value(text, f"wfdash_agent_requests_total{failed}") == 1


async def test_a_long_prefill_leaves_busy_queue_estimated_from_the_agent(
    client: httpx.AsyncClient,
) -> None:
    """llama-server's /metrics waits out a prefill longer than the agent's metrics timeout:
    the agent answers with its own families and the slot count from /props, and the
    dashboard's figures say 1 running, 2 waiting (estimated) instead of nothing."""
    async with ReplicaHost(SimClock(10.0)) as host:
        replica = await start_ready(host, BITNET)
        async with running_agent(replica.backend_url, metrics_timeout=0.2) as (_, url):
            body = {"prompt": "word " * 300, "max_tokens": 1, "ignore_eos": True}
            tasks = [
                asyncio.create_task(client.post(f"{url}/v1/completions", json=body))
                for _ in range(3)
            ]
            await until(lambda: replica.in_flight == 3)
            text = (await client.get(f"{url}/metrics")).text
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    point, _ = parse_point(text)
    assert point is not None
    history = CounterHistory(point.layout(), 10)
    history.add(0.0, point.values(point.layout()))
    metrics = derive_metrics(point, history, 0.0, 60.0)
    assert metrics.backend_metrics_ok is False  # late: the prefill step holds /metrics
    assert (metrics.in_flight, metrics.slots) == (3, 1)
    assert (metrics.running, metrics.waiting, metrics.busy_is_estimate) == (1, 2, True)
