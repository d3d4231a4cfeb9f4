"""The agent as a reverse proxy: bytes, headers and status codes pass unchanged, streams are
not buffered, and a backend that is down, slow, restarting or talking garbage, or a client
that leaves mid-stream, is handled and counted.

Backends here are real loopback servers: raw asyncio ones where the exact bytes on the wire
matter, aiohttp ones where a stream's pacing does. The agent runs in the test's loop behind
an aiohttp AppRunner, as the sandbox runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from wfdash.agent import Agent, AgentConfig, BuildInfo
from wfdash.agent.proxy import MAX_BACKEND_METRICS_BYTES

# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running_agent(
    backend_url: str,
    *,
    build_info: BuildInfo | None = None,
    clock: Callable[[], float] = time.monotonic,
    handler_cancellation: bool = True,
    **config: Any,
) -> AsyncIterator[tuple[Agent, str]]:
    """An agent on a loopback port in this loop, in front of `backend_url`."""
    settings = replace(AgentConfig(backend_url=backend_url, build_info_path=None), **config)
    agent = Agent(settings, build_info, clock=clock)
    runner = web.AppRunner(
        agent.app(),
        access_log=None,
        handler_cancellation=handler_cancellation,
        shutdown_timeout=0.1,
    )
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    await web.SockSite(runner, sock).start()
    try:
        yield agent, url
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def aiohttp_backend(
    routes: Callable[[web.RouteTableDef], None], port: int = 0
) -> AsyncIterator[str]:
    """An aiohttp server with the routes `routes` adds; yields its base URL."""
    table = web.RouteTableDef()
    routes(table)
    app = web.Application()
    app.add_routes(table)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        await runner.cleanup()


@dataclass
class RawBackend:
    """A socket server that records each raw request and answers with `answer`'s bytes."""

    answer: Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]
    requests: list[bytes] = field(default_factory=list)
    url: str = ""
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = b""
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        body = await reader.readexactly(int(line.split(b":")[1]))
                self.requests.append(head + body)
                await self.answer(head, writer)
                await writer.drain()
                if writer.is_closing():
                    return
        writer.close()


@contextlib.asynccontextmanager
async def raw_backend(
    answer: Callable[[bytes, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[RawBackend]:
    backend = RawBackend(answer)
    backend.server = await asyncio.start_server(backend._handle, "127.0.0.1", 0)
    backend.url = f"http://127.0.0.1:{backend.server.sockets[0].getsockname()[1]}"
    try:
        yield backend
    finally:
        backend.server.close()
        for writer in backend.writers:
            writer.transport.abort()
        await asyncio.sleep(0)  # let the handlers see it


def fixed_answer(response: bytes) -> Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]:
    async def answer(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(response)

    return answer


@dataclass
class Received:
    status: int
    reason: str | None
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def headers_without(self, *names: bytes) -> list[tuple[bytes, bytes]]:
        return [(k, v) for k, v in self.headers if k.lower() not in names]


async def fetch(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Received:
    async with session.request(method, url, **kwargs) as response:
        body = await response.read()
        return Received(response.status, response.reason, list(response.raw_headers), body)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # Bytes as they travel: no decompression, no cookie handling.
    async with aiohttp.ClientSession(
        auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    ) as http:
        yield http


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def agent_metrics(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url + "/metrics") as response:
        assert response.status == 200
        return await response.text()


def sample(text: str, line_start: str) -> float:
    """The value of the one sample line starting with `line_start`."""
    (line,) = [line for line in text.splitlines() if line.startswith(line_start + " ")]
    return float(line.rsplit(" ", 1)[1])


def requests_total(text: str, route: str, outcome: str) -> float:
    return sample(text, f'wfdash_agent_requests_total{{route="{route}",outcome="{outcome}"}}')


# --------------------------------------------------------------------------- passthrough

JSON_BODY = json.dumps(
    {
        "id": "cmpl-1",
        "object": "text_completion",
        "choices": [{"text": " the model runs", "index": 0, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
).encode()


async def test_json_response_is_relayed_byte_for_byte(session: aiohttp.ClientSession) -> None:
    gzipped = gzip.compress(JSON_BODY, mtime=0)
    response = (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: application/json; charset=utf-8\r\n"
        b"X-Request-Id: abc\r\n"
        b"x-lower-case: kept as is\r\n"
        b"Set-Cookie: a=1; Path=/\r\n"
        b"Set-Cookie: b=2\r\n"
        b"Server: llama.cpp\r\n"
        b"Content-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n" % len(gzipped)
    ) + gzipped
    async with (
        raw_backend(fixed_answer(response)) as backend,
        running_agent(backend.url) as (
            _,
            url,
        ),
    ):
        direct = await fetch(session, "POST", backend.url + "/v1/completions", data=b"{}")
        relayed = await fetch(session, "POST", url + "/v1/completions", data=b"{}")
    assert relayed.body == direct.body == gzipped  # compressed bytes, not decoded
    assert (relayed.status, relayed.reason) == (direct.status, direct.reason)
    # Every header as the backend sent it, in its order and case; the agent only adds the
    # Date that a proxy must add to a response without one (RFC 9110 section 6.6.1).
    assert relayed.headers_without(b"date") == direct.headers
    assert [k for k, _ in relayed.headers].count(b"Date") == 1


@pytest.mark.parametrize(
    ("status", "reason", "body"),
    [
        (400, b"Bad Request", b'{"error":{"code":400,"message":"bad","type":"x"}}'),
        (401, b"Unauthorized", b'{"error":"invalid api key"}'),
        (404, b"Not Found", b"File Not Found"),
        (422, b"Unprocessable Entity", b'{"detail":[]}'),
        (500, b"Internal Server Error", b'{"error":{"code":500}}'),
        (503, b"Service Unavailable", b'{"error":{"code":503,"message":"Loading model"}}'),
        (204, b"No Content", b""),
    ],
)
async def test_status_codes_and_error_bodies_pass_through(
    session: aiohttp.ClientSession, status: int, reason: bytes, body: bytes
) -> None:
    length = b"" if status == 204 else b"Content-Length: %d\r\n" % len(body)
    response = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n%s\r\n%s" % (
        status,
        reason,
        length,
        body,
    )
    async with (
        raw_backend(fixed_answer(response)) as backend,
        running_agent(backend.url) as (
            _,
            url,
        ),
    ):
        direct = await fetch(session, "POST", backend.url + "/v1/chat/completions", json={})
        relayed = await fetch(session, "POST", url + "/v1/chat/completions", json={})
        metrics = await agent_metrics(session, url)
    assert (relayed.status, relayed.reason, relayed.body) == (
        direct.status,
        direct.reason,
        direct.body,
    )
    assert relayed.headers_without(b"date") == direct.headers
    outcome = "ok" if status < 400 else "client_error" if status < 500 else "server_error"
    assert requests_total(metrics, "/v1/chat/completions", outcome) == 1


async def test_request_reaches_the_backend_unchanged_but_hop_by_hop_headers(
    session: aiohttp.ClientSession,
) -> None:
    request = (
        b"POST /v1/completions?stream=false&x=%2F HTTP/1.1\r\n"
        b"Host: api.example.com\r\n"
        b"Authorization: Bearer sk-secret-123\r\n"
        b"content-type: application/json\r\n"
        b"X-Client: wfdash-test\r\n"
        b"Connection: keep-alive, X-Hop\r\n"
        b"X-Hop: only for the first hop\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"TE: trailers\r\n"
        b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
        b"Content-Length: 27\r\n"
        b"\r\n"
        b'{"prompt":"hi","stream":0}\n'
    )
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    async with raw_backend(fixed_answer(ok)) as backend, running_agent(backend.url) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        writer.close()
    (seen,) = backend.requests
    expected = (
        b"POST /v1/completions?stream=false&x=%2F HTTP/1.1\r\n"
        b"Host: api.example.com\r\n"
        b"Authorization: Bearer sk-secret-123\r\n"
        b"content-type: application/json\r\n"
        b"X-Client: wfdash-test\r\n"
        b"Content-Length: 27\r\n"
        b"\r\n"
        b'{"prompt":"hi","stream":0}\n'
    )
    assert seen == expected


async def test_a_chunked_request_body_is_relayed_whole(session: aiohttp.ClientSession) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"prompt":'
        yield b'"hello"}'

    async with raw_backend(fixed_answer(ok)) as backend, running_agent(backend.url) as (_, url):
        relayed = await fetch(session, "POST", url + "/v1/completions", data=chunks())
    assert relayed.status == 200
    (seen,) = backend.requests
    assert seen.endswith(b'\r\n\r\n{"prompt":"hello"}')
    assert b"Content-Length: 18\r\n" in seen
    assert b"transfer-encoding" not in seen.lower()


async def test_hop_by_hop_response_headers_are_not_relayed(
    session: aiohttp.ClientSession,
) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\n"
        b"Connection: keep-alive, X-Backend-Hop\r\n"
        b"Keep-Alive: timeout=5, max=100\r\n"
        b"X-Backend-Hop: secret\r\n"
        b"Proxy-Authenticate: Basic\r\n"
        b"X-End-To-End: yes\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    async with (
        raw_backend(fixed_answer(response)) as backend,
        running_agent(backend.url) as (
            _,
            url,
        ),
    ):
        relayed = await fetch(session, "GET", url + "/v1/models")
    names = {k.lower() for k, _ in relayed.headers}
    assert b"x-end-to-end" in names
    assert not names & {b"keep-alive", b"x-backend-hop", b"proxy-authenticate"}
    assert relayed.body == b"{}"


SSE_EVENTS = [
    b'data: {"id":"c","choices":[{"text":" the","index":0,"finish_reason":null}]}\n\n',
    b'data: {"id":"c","choices":[{"text":" model","index":0,"finish_reason":null}]}\n\n',
    b'data: {"id":"c","choices":[{"text":" runs","index":0,"finish_reason":"length"}],'
    b'"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}\n\n',
    b"data: [DONE]\n\n",
]


async def test_sse_stream_is_relayed_chunk_by_chunk_without_buffering(
    session: aiohttp.ClientSession,
) -> None:
    """The client holds each event before the backend writes the next one."""
    release = [asyncio.Event() for _ in SSE_EVENTS]

    def routes(r: web.RouteTableDef) -> None:
        @r.post("/v1/completions")
        async def stream(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await response.prepare(request)
            for event, go in zip(SSE_EVENTS, release, strict=True):
                await go.wait()
                await response.write(event)
            await response.write_eof()
            return response

    async with aiohttp_backend(routes) as backend, running_agent(backend) as (_, url):
        async with session.post(url + "/v1/completions", json={"stream": True}) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/event-stream"
            assert response.headers["Cache-Control"] == "no-cache"
            assert response.headers["Transfer-Encoding"] == "chunked"
            received = b""
            for i, go in enumerate(release):
                go.set()
                expected = b"".join(SSE_EVENTS[: i + 1])
                while len(received) < len(expected):
                    received += await asyncio.wait_for(response.content.readany(), 5)
                assert received == expected  # nothing of the next event was written yet
            assert await response.content.read() == b""
        metrics = await agent_metrics(session, url)
    assert requests_total(metrics, "/v1/completions", "ok") == 1
    assert sample(metrics, "wfdash_agent_prompt_tokens_total") == 4
    assert sample(metrics, "wfdash_agent_completion_tokens_total") == 3


async def test_garbage_body_bytes_are_relayed_unchanged(session: aiohttp.ClientSession) -> None:
    junk = os.urandom(70_000) + b"\r\n0\r\n\r\n\x00\xff"
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(junk) + junk
    async with (
        raw_backend(fixed_answer(response)) as backend,
        running_agent(backend.url) as (
            _,
            url,
        ),
    ):
        relayed = await fetch(session, "POST", url + "/v1/completions", data=b"{}")
        metrics = await agent_metrics(session, url)
    assert relayed.body == junk
    assert relayed.headers_without(b"date") == [(b"Content-Length", str(len(junk)).encode())]
    # Not JSON: no usage read, and nothing broke.
    assert sample(metrics, "wfdash_agent_completion_tokens_total") == 0
    assert requests_total(metrics, "/v1/completions", "ok") == 1


# --------------------------------------------------------------------------- backend trouble


async def test_a_backend_that_is_down_gets_a_502_and_is_counted(
    session: aiohttp.ClientSession,
) -> None:
    async with running_agent(f"http://127.0.0.1:{free_port()}") as (_, url):
        relayed = await fetch(session, "POST", url + "/v1/completions", json={"prompt": "x"})
        health = await fetch(session, "GET", url + "/health")
        metrics = await agent_metrics(session, url)
    assert relayed.status == 502
    error = json.loads(relayed.body)["error"]
    assert error["code"] == 502 and "cannot connect" in error["message"]
    assert health.status == 503
    assert json.loads(health.body)["error"]["type"] == "unavailable_error"
    assert requests_total(metrics, "/v1/completions", "server_error") == 1
    assert sample(metrics, 'wfdash_agent_backend_errors_total{reason="connect"}') == 1
    assert sample(metrics, "wfdash_agent_backend_metrics_up") == 0
    assert sample(metrics, "wfdash_agent_requests_in_flight") == 0
    assert sample(metrics, "wfdash_agent_requests_queued") == 0


async def test_health_mirrors_the_backend_503_while_it_loads_then_200(
    session: aiohttp.ClientSession,
) -> None:
    loaded = False
    loading = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}

    def routes(r: web.RouteTableDef) -> None:
        @r.get("/health")
        async def health(_: web.Request) -> web.Response:
            if loaded:
                return web.json_response({"status": "ok"})
            return web.json_response(loading, status=503)

    async with aiohttp_backend(routes) as backend, running_agent(backend) as (_, url):
        first = await fetch(session, "GET", url + "/health")
        loaded = True
        second = await fetch(session, "GET", url + "/health")
    assert (first.status, json.loads(first.body)) == (503, loading)
    assert (second.status, json.loads(second.body)) == (200, {"status": "ok"})
    assert dict(second.headers)[b"Content-Type"].startswith(b"application/json")


async def test_a_hung_backend_health_answers_503_after_the_health_timeout(
    session: aiohttp.ClientSession,
) -> None:
    async def hang(_: bytes, __: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    async with (
        raw_backend(hang) as backend,
        running_agent(backend.url, health_timeout=0.2, metrics_timeout=0.2) as (_, url),
    ):
        started = time.monotonic()
        health = await fetch(session, "GET", url + "/health")
        metrics = await agent_metrics(session, url)
        elapsed = time.monotonic() - started
    assert health.status == 503
    assert "backend unreachable" in json.loads(health.body)["error"]["message"]
    assert sample(metrics, "wfdash_agent_backend_metrics_up") == 0
    assert elapsed < 3.0


async def test_a_slow_backend_is_waited_for_unless_a_read_timeout_is_set(
    session: aiohttp.ClientSession,
) -> None:
    def routes(r: web.RouteTableDef) -> None:
        @r.post("/v1/completions")
        async def slow(_: web.Request) -> web.Response:
            await asyncio.sleep(0.4)
            return web.json_response({"choices": []})

    async with aiohttp_backend(routes) as backend:
        async with running_agent(backend) as (_, url):
            patient = await fetch(session, "POST", url + "/v1/completions", json={})
        async with running_agent(backend, read_timeout=0.1) as (_, url):
            hasty = await fetch(session, "POST", url + "/v1/completions", json={})
            metrics = await agent_metrics(session, url)
    assert patient.status == 200
    assert hasty.status == 504
    assert sample(metrics, 'wfdash_agent_backend_errors_total{reason="timeout"}') == 1
    assert requests_total(metrics, "/v1/completions", "server_error") == 1


async def test_the_agent_survives_its_backend_restarting(session: aiohttp.ClientSession) -> None:
    port = free_port()
    backend_url = f"http://127.0.0.1:{port}"

    def routes(r: web.RouteTableDef) -> None:
        @r.get("/health")
        async def health(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        @r.post("/v1/completions")
        async def complete(_: web.Request) -> web.Response:
            return web.Response(body=JSON_BODY, content_type="application/json")

    async with running_agent(backend_url) as (_, url):
        async with aiohttp_backend(routes, port):
            before = await fetch(session, "POST", url + "/v1/completions", json={})
            assert (await fetch(session, "GET", url + "/health")).status == 200
        # Down: the pooled keep-alive connection to the old process is dead too.
        during = await fetch(session, "POST", url + "/v1/completions", json={})
        assert (await fetch(session, "GET", url + "/health")).status == 503
        async with aiohttp_backend(routes, port):
            after = [await fetch(session, "POST", url + "/v1/completions", json={}) for _ in "ab"]
            assert (await fetch(session, "GET", url + "/health")).status == 200
        metrics = await agent_metrics(session, url)
    assert before.status == 200 and before.body == JSON_BODY
    assert during.status == 502
    assert [a.status for a in after] == [200, 200] and after[0].body == JSON_BODY
    assert requests_total(metrics, "/v1/completions", "ok") == 3
    assert requests_total(metrics, "/v1/completions", "server_error") == 1


async def test_a_garbage_status_line_gets_a_502(session: aiohttp.ClientSession) -> None:
    answer = fixed_answer(b"SSH-2.0-OpenSSH_9.6\r\n\r\nnot http at all")
    async with raw_backend(answer) as backend, running_agent(backend.url) as (_, url):
        relayed = await fetch(session, "POST", url + "/v1/completions", json={})
        metrics = await agent_metrics(session, url)
    assert relayed.status == 502
    assert sample(metrics, 'wfdash_agent_backend_errors_total{reason="invalid"}') == 1
    assert requests_total(metrics, "/v1/completions", "server_error") == 1


async def test_a_backend_breaking_off_mid_stream_truncates_the_client_too(
    session: aiohttp.ClientSession,
) -> None:
    """The client must see an incomplete body, never a clean end of a cut-off answer."""

    async def break_off(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n" % (len(SSE_EVENTS[0]), SSE_EVENTS[0])
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    async with raw_backend(break_off) as backend, running_agent(backend.url) as (_, url):
        async with session.post(url + "/v1/completions", json={"stream": True}) as response:
            assert response.status == 200
            assert await response.content.readany() == SSE_EVENTS[0]
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.content.read()
        metrics = await agent_metrics(session, url)
    assert requests_total(metrics, "/v1/completions", "server_error") == 1
    assert sample(metrics, 'wfdash_agent_backend_errors_total{reason="disconnect"}') == 1
    assert sample(metrics, "wfdash_agent_requests_in_flight") == 0


# --------------------------------------------------------------------------- client trouble


@pytest.mark.parametrize(
    ("pause", "cancellation"),
    [(0.01, True), (0.0, True), (0.0, False)],
    ids=["paced", "flat-out", "found-by-a-write"],
)
async def test_a_client_leaving_mid_stream_cancels_the_backend_request(
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    pause: float,
    cancellation: bool,
) -> None:
    """Whether aiohttp notices the hang-up (and cancels the handler) or a write does, the
    request counts as cancelled, the backend sees the disconnect, and nothing is logged
    as an error."""
    backend_saw_disconnect = asyncio.Event()

    def routes(r: web.RouteTableDef) -> None:
        @r.post("/v1/completions")
        async def endless(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            try:
                while True:
                    await response.write(SSE_EVENTS[0] * (1 if pause else 100))
                    await asyncio.sleep(pause)
            except (asyncio.CancelledError, ConnectionError):
                backend_saw_disconnect.set()
                raise

    async with (
        aiohttp_backend(routes) as backend,
        running_agent(backend, handler_cancellation=cancellation) as (agent, url),
    ):
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        await reader.readuntil(b"data: ")  # the stream is flowing
        assert agent.metrics.in_flight == 1 and agent.metrics.queued == 0
        writer.transport.abort()
        await asyncio.wait_for(backend_saw_disconnect.wait(), 5)
        await until(lambda: agent.metrics.in_flight == 0)
        metrics = await agent_metrics(session, url)
    assert requests_total(metrics, "/v1/completions", "cancelled") == 1
    assert requests_total(metrics, "/v1/completions", "ok") == 0
    assert sample(metrics, "wfdash_agent_requests_queued") == 0
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    # A cancelled request has no end-to-end latency; its first token did come.
    assert sample(metrics, "wfdash_agent_e2e_request_latency_seconds_count") == 0
    assert sample(metrics, "wfdash_agent_time_to_first_token_seconds_count") == 1


async def test_a_client_leaving_while_queued_cancels_too(session: aiohttp.ClientSession) -> None:
    backend_saw_disconnect = asyncio.Event()

    def routes(r: web.RouteTableDef) -> None:
        @r.post("/v1/completions")
        async def queued(_: web.Request) -> web.Response:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                backend_saw_disconnect.set()
                raise
            raise AssertionError("unreachable")

    async with aiohttp_backend(routes) as backend, running_agent(backend) as (agent, url):
        task = asyncio.create_task(fetch(session, "POST", url + "/v1/completions", json={}))
        await until(lambda: agent.metrics.queued == 1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.wait_for(backend_saw_disconnect.wait(), 5)
        await until(lambda: agent.metrics.in_flight == 0)
        metrics = await agent_metrics(session, url)
    assert requests_total(metrics, "/v1/completions", "cancelled") == 1
    assert sample(metrics, "wfdash_agent_requests_queued") == 0
    assert sample(metrics, "wfdash_agent_time_to_first_token_seconds_count") == 0


async def test_a_slow_client_holds_the_backend_back(session: aiohttp.ClientSession) -> None:
    """Back-pressure: while the client reads nothing, the backend cannot write much more
    than the sockets' buffers hold; the agent does not soak the stream up."""
    total = 128 * 1024 * 1024
    block = b"x" * (256 * 1024)
    written = 0

    def routes(r: web.RouteTableDef) -> None:
        @r.get("/v1/big")
        async def big(request: web.Request) -> web.StreamResponse:
            nonlocal written
            response = web.StreamResponse(headers={"Content-Length": str(total)})
            await response.prepare(request)
            while written < total:
                await response.write(block)
                written += len(block)
            await response.write_eof()
            return response

    async with aiohttp_backend(routes) as backend, running_agent(backend) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(client, ("127.0.0.1", port))
        await loop.sock_sendall(client, b"GET /v1/big HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: written > 0)
        stalled_at = -1
        while stalled_at != written:  # wait until the backend stops making progress
            stalled_at = written
            await asyncio.sleep(0.2)
        # Loopback buffers can autotune to tens of MB; without back-pressure the whole
        # 128 MB would be gone into the agent by now.
        assert written < total // 2, written
        received = 0
        while received < total:
            chunk = await loop.sock_recv(client, 1024 * 1024)
            assert chunk
            received += len(chunk)
        client.close()
    assert written == total


async def test_a_request_body_over_the_limit_is_refused(session: aiohttp.ClientSession) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    async with (
        raw_backend(fixed_answer(ok)) as backend,
        running_agent(backend.url, max_body_bytes=1000) as (_, url),
    ):
        refused = await fetch(session, "POST", url + "/v1/completions", data=b"x" * 1001)
        accepted = await fetch(session, "POST", url + "/v1/completions", data=b"x" * 1000)
        metrics = await agent_metrics(session, url)
    assert refused.status == 413 and accepted.status == 200
    # The scrape asks for /metrics and, beside it, /props (the slot count).
    paths = [r.split(b" ")[1] for r in backend.requests]
    assert paths[0] == b"/v1/completions" and sorted(paths[1:]) == [b"/metrics", b"/props"]
    assert requests_total(metrics, "/v1/completions", "client_error") == 1


# --------------------------------------------------------------------------- /metrics access


async def test_metrics_token_guards_metrics_only(session: aiohttp.ClientSession) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    async with (
        raw_backend(fixed_answer(ok)) as backend,
        running_agent(backend.url, metrics_token="s3cret") as (_, url),
    ):
        anonymous = await fetch(session, "GET", url + "/metrics")
        wrong = await fetch(
            session, "GET", url + "/metrics", headers={"Authorization": "Bearer nope"}
        )
        right = await fetch(
            session, "GET", url + "/metrics", headers={"Authorization": "Bearer s3cret"}
        )
        api = await fetch(session, "POST", url + "/v1/completions", json={})
    assert (anonymous.status, wrong.status, right.status, api.status) == (401, 401, 200, 200)
    assert b"wfdash_agent_requests_total" in right.body
    assert b"s3cret" not in anonymous.body + wrong.body


async def test_backend_metrics_are_capped_in_size(session: aiohttp.ClientSession) -> None:
    huge = b"# " + b"x" * MAX_BACKEND_METRICS_BYTES + b"\n"

    def routes(r: web.RouteTableDef) -> None:
        @r.get("/metrics")
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=huge, content_type="text/plain")

    async with aiohttp_backend(routes) as backend, running_agent(backend) as (_, url):
        text = await agent_metrics(session, url)
    assert sample(text, "wfdash_agent_backend_metrics_up") == 0
    assert len(text) < 100_000
