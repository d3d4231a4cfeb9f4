"""What the agent counts, checked against known request sequences, and its /metrics text
checked with prometheus_client's parser (the reference the scrapers follow).

Durations come from a clock the test moves by hand, so TTFT and latency buckets are exact
whatever the load on the machine.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.test_agent_proxy import aiohttp_backend, free_port, running_agent, until
from wfdash.agent import BuildInfo, load_build_info
from wfdash.agent.buildinfo import BuildInfoError
from wfdash.agent.config import AgentConfig, parse_config
from wfdash.agent.metrics import E2E_BUCKETS, OUTCOMES, ROUTES, TTFT_BUCKETS, AgentMetrics
from wfdash.agent.proxy import exposition_text
from wfdash.agent.usage import MAX_LINE_BYTES, Usage, UsageScanner
from wfdash.sandbox.exposition import (
    TTFT_BUCKETS as VLLM_TTFT_BUCKETS,
)
from wfdash.sandbox.exposition import (
    LlamaCppCounters,
    VllmCounters,
    render_llamacpp_metrics,
    render_vllm_metrics,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample, by (name, labels), through prometheus_client."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def scrape(session: aiohttp.ClientSession, url: str) -> tuple[str, Samples]:
    async with session.get(url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await response.text()
    return text, parse(text)


# --------------------------------------------------------------------------- a known sequence


class ScriptedBackend:
    """Completions that go on, one step at a time, when the test says so."""

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.gates: asyncio.Queue[asyncio.Event] = asyncio.Queue()
        self.clock = clock

    async def wait(self) -> None:
        gate = asyncio.Event()
        await self.gates.put(gate)
        await gate.wait()

    async def release(self, at: float | None = None) -> None:
        """Let the next waiting step go on, at time `at` of the manual clock."""
        gate = await asyncio.wait_for(self.gates.get(), 5)
        if at is not None:
            assert self.clock is not None
            self.clock.now = at
        gate.set()

    def routes(self, r: web.RouteTableDef) -> None:
        @r.post("/v1/completions")
        async def complete(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            await self.wait()  # queue + prefill (+ all the decoding when not streaming)
            if body.get("status", 200) != 200:
                return web.json_response({"error": "no"}, status=body["status"])
            usage = {"prompt_tokens": body["prompt_tokens"], "completion_tokens": 2}
            if not body.get("stream"):
                return web.json_response({"choices": [{"text": "a b"}], "usage": usage})
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b'data: {"choices":[{"text":"a"}]}\n\n')
            await self.wait()  # decoding
            final = {"choices": [{"text": " b"}], "usage": usage}
            await response.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
            await response.write_eof()
            return response

        @r.post("/v1/chat/completions")
        async def chat(_: web.Request) -> web.Response:
            return web.json_response({"choices": [], "usage": {"prompt_tokens": 1}})

        @r.get("/v1/models")
        async def models(_: web.Request) -> web.Response:
            return web.json_response({"data": []})


async def test_counts_and_histograms_follow_a_known_request_sequence(
    session: aiohttp.ClientSession,
) -> None:
    clock = ManualClock()
    backend = ScriptedBackend(clock)
    async with (
        aiohttp_backend(backend.routes) as base,
        running_agent(base, clock=clock) as (
            agent,
            url,
        ),
    ):

        async def post(path: str, body: dict[str, Any]) -> int:
            async with session.post(url + path, json=body) as response:
                await response.read()
                return response.status

        # Three JSON completions: TTFT (= the whole answer) 0.03, 0.3 and 3 s.
        for ttft, prompt_tokens in ((0.03, 5), (0.3, 7), (3.0, 11)):
            task = asyncio.create_task(post("/v1/completions", {"prompt_tokens": prompt_tokens}))
            await backend.release(at=clock.now + ttft)
            assert await task == 200
        # A stream: first token after 0.07 s, done after 1.2 s.
        start = clock.now
        stream = asyncio.create_task(post("/v1/completions", {"prompt_tokens": 13, "stream": True}))
        await backend.release(at=start + 0.07)
        while agent.metrics.queued:  # the first chunk went through
            await asyncio.sleep(0.001)
        await backend.release(at=start + 1.2)
        assert await stream == 200
        # A client error and a server error from the backend: counted, no latency.
        for status in (400, 500):
            task = asyncio.create_task(
                post("/v1/completions", {"prompt_tokens": 1, "status": status})
            )
            await backend.release()
            assert await task == status
        # Other routes.
        assert await post("/v1/chat/completions", {}) == 200
        async with session.get(url + "/v1/models") as response:
            assert response.status == 200
        async with session.get(url + "/nope") as response:
            assert response.status == 404
        _, samples = await scrape(session, url)

    expected = {
        ("/v1/completions", "ok"): 4,
        ("/v1/completions", "client_error"): 1,
        ("/v1/completions", "server_error"): 1,
        ("/v1/chat/completions", "ok"): 1,
        ("/v1/models", "ok"): 1,
        ("other", "client_error"): 1,
    }
    for route in ROUTES:
        for outcome in OUTCOMES:
            got = get(samples, "wfdash_agent_requests_total", route=route, outcome=outcome)
            assert got == expected.get((route, outcome), 0), (route, outcome)
    ttfts = [0.03, 0.3, 3.0, 0.07, 0.0]  # the chat completion answered at once
    for bound in TTFT_BUCKETS:
        got = get(samples, "wfdash_agent_time_to_first_token_seconds_bucket", le=repr(bound))
        assert got == sum(1 for t in ttfts if t <= bound), bound
    assert get(samples, "wfdash_agent_time_to_first_token_seconds_count") == 5
    assert get(samples, "wfdash_agent_time_to_first_token_seconds_sum") == pytest.approx(3.4)
    e2e = [0.03, 0.3, 3.0, 1.2, 0.0]
    assert get(samples, "wfdash_agent_e2e_request_latency_seconds_count") == 5
    assert get(samples, "wfdash_agent_e2e_request_latency_seconds_sum") == pytest.approx(sum(e2e))
    assert get(samples, "wfdash_agent_e2e_request_latency_seconds_bucket", le="1.5") == 4
    # usage: 5 + 7 + 11 + 13 prompt tokens, 2 generated each; the chat answer's usage has
    # no completion_tokens, so it is not counted.
    assert get(samples, "wfdash_agent_prompt_tokens_total") == 36
    assert get(samples, "wfdash_agent_completion_tokens_total") == 8
    assert get(samples, "wfdash_agent_requests_in_flight") == 0
    assert get(samples, "wfdash_agent_requests_queued") == 0


async def _send(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> aiohttp.ClientResponse:
    return await session.post(url, json=body)


async def test_queued_lasts_until_the_first_body_byte_and_in_flight_until_the_end(
    session: aiohttp.ClientSession,
) -> None:
    backend = ScriptedBackend()
    async with aiohttp_backend(backend.routes) as base, running_agent(base) as (agent, url):
        body = {"prompt_tokens": 1, "stream": True}
        sent = asyncio.create_task(_send(session, url + "/v1/completions", body))
        await until(lambda: agent.metrics.in_flight == 1)
        # The backend has not answered at all: queued.
        _, samples = await scrape(session, url)
        assert get(samples, "wfdash_agent_requests_in_flight") == 1
        assert get(samples, "wfdash_agent_requests_queued") == 1
        await backend.release()
        response = await sent
        await response.content.readuntil(b"\n\n")
        _, samples = await scrape(session, url)
        assert get(samples, "wfdash_agent_requests_in_flight") == 1
        assert get(samples, "wfdash_agent_requests_queued") == 0
        await backend.release()
        await response.read()
        response.release()
        await until(lambda: agent.metrics.in_flight == 0)
        assert agent.metrics.queued == 0


async def test_headers_alone_do_not_end_the_queue(session: aiohttp.ClientSession) -> None:
    """llama-server sends a stream's headers before a slot takes the request."""
    release = asyncio.Event()

    def routes(r: web.RouteTableDef) -> None:
        @r.post("/v1/completions")
        async def deferred(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await release.wait()
            await response.write(b"data: {}\n\n")
            await response.write_eof()
            return response

    async with (
        aiohttp_backend(routes) as base,
        running_agent(base) as (agent, url),
        session.post(url + "/v1/completions", json={}) as response,
    ):
        assert response.status == 200
        assert agent.metrics.queued == 1
        release.set()
        await response.read()


# --------------------------------------------------------------------------- /metrics body


async def test_backend_families_are_appended_unchanged(session: aiohttp.ClientSession) -> None:
    llama = render_llamacpp_metrics(
        LlamaCppCounters(prompt_tokens_total=1_234_567, n_busy_slots_per_decode=None)
    )

    def routes(r: web.RouteTableDef) -> None:
        @r.get("/metrics")
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=llama.encode(), content_type="text/plain")

    build = BuildInfo("bitnet", 'odd "model"\\name', "i2_s", "v7", True, 4.5)
    async with aiohttp_backend(routes) as base, running_agent(base, build_info=build) as (_, url):
        text, samples = await scrape(session, url)
    assert text.endswith(llama)  # byte for byte: `-nan`, `1.23457e+06` and all
    assert get(samples, "wfdash_agent_backend_metrics_up") == 1
    assert get(samples, "llamacpp:prompt_tokens_total") == 1234570.0
    info = get(
        samples,
        "wfdash_agent_build_info",
        backend="bitnet",
        model='odd "model"\\name',
        quant_type="i2_s",
        cache_version="v7",
        cache="hit",
        build_seconds="4.5",
    )
    assert info == 1
    assert get(samples, "wfdash_agent_start_time_seconds") > 1e9


async def test_vllm_families_parse_with_the_agents_in_one_body(
    session: aiohttp.ClientSession,
) -> None:
    vllm = render_vllm_metrics(VllmCounters())

    def routes(r: web.RouteTableDef) -> None:
        @r.get("/metrics")
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=vllm.encode(), content_type="text/plain")

    async with aiohttp_backend(routes) as base, running_agent(base) as (_, url):
        text, samples = await scrape(session, url)
    assert text.endswith(vllm)
    engine = frozenset({("engine", "0"), ("model_name", "microsoft/bitnet-b1.58-2B-4T")})
    assert ("vllm:num_requests_running", engine) in samples
    assert not any(name == "wfdash_agent_build_info" for name, _ in samples)  # no build info


BAD_BACKEND_METRICS = {
    "http-500": (500, b"oops"),
    "html": (200, b"<html><body>502 Bad Gateway</body></html>"),
    "binary": (200, bytes(range(256))),
    "nul": (200, b"llamacpp:n_decode_total 1\n\x00\n"),
}


@pytest.mark.parametrize("kind", [*BAD_BACKEND_METRICS, "down", "slow"])
async def test_a_failed_backend_scrape_leaves_the_agents_families_and_says_so(
    session: aiohttp.ClientSession, kind: str
) -> None:
    def routes(r: web.RouteTableDef) -> None:
        @r.get("/metrics")
        async def metrics(_: web.Request) -> web.Response:
            if kind == "slow":
                await asyncio.sleep(5)
            status, body = BAD_BACKEND_METRICS.get(kind, (200, b""))
            return web.Response(status=status, body=body)

    async with aiohttp_backend(routes) as base:
        target = f"http://127.0.0.1:{free_port()}" if kind == "down" else base
        async with running_agent(target, metrics_timeout=0.2) as (_, url):
            text, samples = await scrape(session, url)
    assert get(samples, "wfdash_agent_backend_metrics_up") == 0
    assert get(samples, "wfdash_agent_requests_in_flight") == 0
    assert all(name.startswith("wfdash_agent_") for name, _ in samples)
    assert text.endswith("\n")


SLOTS = "wfdash_agent_backend_slots"


@pytest.mark.parametrize(
    ("answers", "expected", "asked"),
    [
        # llama-server: the slot count once /props answers (503 while it loads), then
        # never asked again.
        ([(503, b'{"error":{"code":503}}'), (200, b'{"total_slots": 4, "x": 1}')], 4, 2),
        # vLLM: no /props. A 404 ends the asking.
        ([(404, b"Not Found")], None, 1),
        # Something else answers /props: no slot count in it, none asked for again.
        ([(200, b'{"total_slots": 0}')], None, 1),
        ([(200, b'{"total_slots": true}')], None, 1),
        # Garbage is a failed try, as a timeout is: asked again.
        ([(200, b"<html>"), (200, b'{"total_slots": 1}')], 1, 2),
    ],
)
async def test_the_backends_slot_count_is_learnt_from_props(
    session: aiohttp.ClientSession,
    answers: list[tuple[int, bytes]],
    expected: int | None,
    asked: int,
) -> None:
    props_calls = 0

    def routes(r: web.RouteTableDef) -> None:
        @r.get("/props")
        async def props(_: web.Request) -> web.Response:
            nonlocal props_calls
            status, body = answers[min(props_calls, len(answers) - 1)]
            props_calls += 1
            return web.Response(status=status, body=body, content_type="application/json")

        @r.get("/metrics")
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=b"", content_type="text/plain")

    async with aiohttp_backend(routes) as base, running_agent(base) as (_, url):
        for _ in range(4):
            _, samples = await scrape(session, url)
    assert props_calls == asked
    if expected is None:
        assert not any(name == SLOTS for name, _ in samples)
    else:
        assert get(samples, SLOTS) == expected


async def test_a_late_backend_metrics_still_brings_the_slot_count(
    session: aiohttp.ClientSession,
) -> None:
    """/props is asked beside /metrics: a llama-server deep in a prefill answers the one
    and not the other, and the dashboard gets what it needs to estimate busy/queue."""

    def routes(r: web.RouteTableDef) -> None:
        @r.get("/props")
        async def props(_: web.Request) -> web.Response:
            return web.json_response({"total_slots": 1})

        @r.get("/metrics")
        async def metrics(_: web.Request) -> web.Response:
            await asyncio.sleep(5)
            return web.Response(body=b"", content_type="text/plain")

    async with (
        aiohttp_backend(routes) as base,
        running_agent(base, metrics_timeout=0.2) as (
            _,
            url,
        ),
    ):
        _, samples = await scrape(session, url)
    assert get(samples, "wfdash_agent_backend_metrics_up") == 0
    assert get(samples, SLOTS) == 1


def test_exposition_check_accepts_real_payloads_and_refuses_garbage() -> None:
    llama = render_llamacpp_metrics(LlamaCppCounters())
    vllm = render_vllm_metrics(VllmCounters())
    assert exposition_text(llama.encode()) == llama
    assert exposition_text(vllm.encode()) == vllm
    assert exposition_text(b"a 1") == "a 1\n"  # a missing last newline is added
    assert exposition_text(b"") == ""
    assert exposition_text(b'x{a="1"} 2 1700000000000\r\n# EOF\n') is not None
    for bad in (b"<html>", b"\xff\xfe", b"a 1\nb\n", b"a 1\x00\n", b"{} 1\n"):
        assert exposition_text(bad) is None, bad


def test_render_parses_with_prometheus_client_and_has_every_series_from_the_start() -> None:
    metrics = AgentMetrics(start_time=1_700_000_000.5)
    metrics.ttft.observe(0.25)  # on a bound: in that bucket (le is inclusive)
    metrics.ttft.observe(math.nextafter(2560.0, math.inf))  # beyond the last bound
    metrics.e2e.observe(0.1)
    text = metrics.render(BuildInfo().labels(), backend_up=True, backend_seconds=0.0125)
    samples = parse(text)
    families = {f.name for f in text_string_to_metric_families(text)}
    assert families == {
        "wfdash_agent_requests",
        "wfdash_agent_requests_in_flight",
        "wfdash_agent_requests_queued",
        "wfdash_agent_time_to_first_token_seconds",
        "wfdash_agent_e2e_request_latency_seconds",
        "wfdash_agent_prompt_tokens",
        "wfdash_agent_completion_tokens",
        "wfdash_agent_backend_errors",
        "wfdash_agent_backend_metrics_up",
        "wfdash_agent_backend_metrics_seconds",
        "wfdash_agent_build_info",
        "wfdash_agent_start_time_seconds",
    }
    assert sum(1 for name, _ in samples if name == "wfdash_agent_requests_total") == 16
    assert get(samples, "wfdash_agent_time_to_first_token_seconds_bucket", le="0.1") == 0
    assert get(samples, "wfdash_agent_time_to_first_token_seconds_bucket", le="0.25") == 1
    assert get(samples, "wfdash_agent_time_to_first_token_seconds_bucket", le="2560.0") == 1
    assert get(samples, "wfdash_agent_time_to_first_token_seconds_bucket", le="+Inf") == 2
    assert get(samples, "wfdash_agent_e2e_request_latency_seconds_bucket", le="0.3") == 1
    assert get(samples, "wfdash_agent_backend_metrics_seconds") == 0.0125
    assert get(samples, "wfdash_agent_start_time_seconds") == 1_700_000_000.5
    info = get(
        samples,
        "wfdash_agent_build_info",
        backend="",
        model="",
        quant_type="",
        cache_version="",
        cache="",
        build_seconds="",
    )
    assert info == 1


def test_bucket_bounds_are_vllms() -> None:
    assert TTFT_BUCKETS == VLLM_TTFT_BUCKETS
    assert E2E_BUCKETS[0] == 0.3 and E2E_BUCKETS[-1] == 7680.0


# --------------------------------------------------------------------------- usage


LLAMA_STREAM = (
    b'data: {"choices":[{"text":" the","index":0,"finish_reason":null}]}\n\n'
    b'data: {"choices":[{"text":" end","index":0,"finish_reason":"length"}],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11},'
    b'"timings":{"prompt_n":9}}\n\n'
    b"data: [DONE]\n\n"
)
VLLM_STREAM = (
    b'data: {"choices":[{"text":" a","index":0}],"usage":null}\r\n\r\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1}}\r\n\r\n'
    b"data: [DONE]\r\n\r\n"
)


@pytest.mark.parametrize(
    ("stream", "usage"), [(LLAMA_STREAM, Usage(9, 2)), (VLLM_STREAM, Usage(4, 1))]
)
def test_usage_is_found_in_a_stream_however_it_is_cut(stream: bytes, usage: Usage) -> None:
    for cut in range(len(stream) + 1):
        scanner = UsageScanner("text/event-stream; charset=utf-8")
        scanner.feed(stream[:cut])
        scanner.feed(stream[cut:])
        assert scanner.result() == usage, cut
    bytewise = UsageScanner("text/event-stream")
    for i in range(len(stream)):
        bytewise.feed(stream[i : i + 1])
    assert bytewise.result() == usage


def test_cumulative_usage_keeps_the_last_one() -> None:
    scanner = UsageScanner("text/event-stream")
    for n in (1, 2, 3):
        scanner.feed(
            f'data: {{"usage":{{"prompt_tokens":4,"completion_tokens":{n}}}}}\n\n'.encode()
        )
    assert scanner.result() == Usage(4, 3)


def test_usage_of_a_json_answer_and_what_is_ignored() -> None:
    scanner = UsageScanner("application/json")
    body = json.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 8}}).encode()
    scanner.feed(body[:10])
    scanner.feed(body[10:])
    assert scanner.result() == Usage(3, 8)
    for junk in (
        b"not json",
        b'{"usage": "lots"}',
        b'{"usage": {"prompt_tokens": -1, "completion_tokens": 2}}',
        b'{"usage": {"prompt_tokens": 1.5, "completion_tokens": 2}}',
        b'{"usage": {"prompt_tokens": true, "completion_tokens": 2}}',
        b'["usage"]',
    ):
        bad = UsageScanner("application/json")
        bad.feed(junk)
        assert bad.result() is None, junk


def test_an_overlong_line_is_skipped_and_reading_goes_on() -> None:
    scanner = UsageScanner("text/event-stream")
    scanner.feed(b'data: {"usage": {"prompt_tokens": 1, "completion_tokens": 1}, "x": "')
    scanner.feed(b"y" * (MAX_LINE_BYTES + 10))
    scanner.feed(b'"}\n\ndata: {"usage":{"prompt_tokens":2,"completion_tokens":5}}\n\n')
    assert scanner.result() == Usage(2, 5)


# --------------------------------------------------------------------------- build info, config


def test_build_info_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "build-info.json"
    path.write_text(
        json.dumps(
            {
                "backend": "vllm",
                "model": "m",
                "quant_type": "",
                "cache_version": "v2",
                "cache_hit": False,
                "build_seconds": 301,
                "something_new": [1, 2],
            }
        )
    )
    info = load_build_info(path)
    assert info == BuildInfo("vllm", "m", "", "v2", False, 301.0)
    assert info.labels()["cache"] == "miss" and info.labels()["build_seconds"] == "301"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{", "not JSON"),
        ("[]", "JSON object"),
        ('{"cache_hit": "yes"}', "cache_hit"),
        ('{"build_seconds": -1}', "negative"),
        ('{"build_seconds": "5"}', "number"),
        ('{"model": 3}', "string"),
    ],
)
def test_build_info_errors_are_one_readable_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "build-info.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BuildInfoError, match=message) as caught:
        load_build_info(path)
    assert "\n" not in str(caught.value)


def test_config_flags_win_over_env_and_the_token_comes_from_env_only() -> None:
    env = {
        "WFDASH_AGENT_PORT": "9000",
        "WFDASH_AGENT_BACKEND": "http://127.0.0.1:9001/",
        "WFDASH_METRICS_TOKEN": "tok",
        "WFDASH_AGENT_READ_TIMEOUT": "30",
    }
    config = parse_config(["--port", "9100", "--build-info", ""], env)
    assert config.port == 9100
    assert config.backend_url == "http://127.0.0.1:9001"
    assert config.metrics_token == "tok"
    assert config.read_timeout == 30
    assert config.build_info_path is None
    assert "tok" not in repr(config)
    assert parse_config([], {}) == AgentConfig()
    other = parse_config(["--metrics-token-env", "MY_TOKEN"], {"MY_TOKEN": "x"})
    assert other.metrics_token == "x"


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "70000"],
        ["--backend", "127.0.0.1:8081"],
        ["--backend", "http://127.0.0.1:8081/?x=1"],
        ["--metrics-timeout", "0"],
        ["--read-timeout", "-1"],
        ["--max-connections", "0"],
        ["--log-level", "loud"],
    ],
)
def test_bad_config_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_config(argv, {})
    assert exited.value.code == 2
    assert "error" in capsys.readouterr().err
