"""The agent's HTTP side: relay to the backend, measure, answer /health and /metrics.

Relaying streams: each chunk the backend sends is written to the client as it arrives, and
the next one is read only once the client took it (`write` waits for the socket to drain),
so a slow client slows the backend's connection down instead of filling the agent's
memory. Per connection the agent holds at most aiohttp's read buffer (64 KiB, then it
stops reading) and its write buffer (64 KiB, then it waits).

Headers follow RFC 9110/7230 for a proxy: hop-by-hop ones (`Connection` and those it
names, `Keep-Alive`, `Transfer-Encoding`, `TE`, `Trailer`, `Upgrade`,
`Proxy-Authorization`, `Proxy-Authenticate`, `Proxy-Connection`) are not relayed; every
other header goes through as it came, name case and order included, `Authorization` too.
Framing is per hop (a chunked answer stays chunked, a `Content-Length` one keeps it) and
the body bytes are the backend's, compressed or not. The agent adds a `Date` to a response
that has none, as RFC 9110 §6.6.1 asks of a proxy, and nothing else.

What counts as what (docs/agent.md has the metric names):

* a request is *in flight* from its arrival until its answer ends, and *queued* until the
  first byte of the response body arrives from the backend (headers alone do not count:
  llama-server sends a stream's headers before a slot takes the request);
* its *outcome*: `ok` (< 400), `client_error` (4xx), `server_error` (5xx from the backend,
  or the agent's own 502/504 when the backend could not be reached or broke off), and
  `cancelled` when the client left before the end; the backend connection is then closed,
  which makes llama-server and vLLM stop generating;
* time to first token: arrival → first body byte, for successful completion requests.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .buildinfo import BuildInfo
from .config import AgentConfig
from .metrics import (
    CANCELLED,
    CLIENT_ERROR,
    INFERENCE_ROUTES,
    SERVER_ERROR,
    AgentMetrics,
    outcome_of,
    route_of,
)
from .usage import UsageScanner

if TYPE_CHECKING:  # for annotations only: nothing of aiohttp.typedefs at run time
    from aiohttp.typedefs import Middleware

log = logging.getLogger("wfdash.agent")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# The request body is read before it is relayed: an `Expect: 100-continue` was answered
# here already. (A chunked request goes on with the Content-Length of the body read.)
_NOT_RELAYED_REQUEST = frozenset({"expect"})
_METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_METRICS_ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
MAX_BACKEND_METRICS_BYTES = 8 * 1024 * 1024
_MAX_HEALTH_BYTES = 64 * 1024
_MAX_PROPS_BYTES = 256 * 1024  # llama-server's carries the chat template
_PROBE_CONNECTIONS = 8
# Memory per relayed stream: aiohttp stops reading from the backend once 2 x _READ_BUFFER
# bytes wait (a socket read can add up to 256 KiB, asyncio's read size, on top), and each
# write to the client is at most _RELAY_CHUNK, written once the client took the previous
# ones but 64 KiB (asyncio's write buffer limit).
_READ_BUFFER = 16 * 1024
_RELAY_CHUNK = 64 * 1024
# A line of the text format: a comment, a blank, or `name{labels} value [timestamp]`.
_EXPOSITION_LINE = re.compile(
    r"#[^\n]*|[ \t]*|[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^\n]*\})?[ \t]+\S+(?:[ \t]+\S+)?[ \t\r]*"
)


class _BackendFailure(Exception):
    """The backend gave no usable answer; `reason` is a `backend_errors_total` label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Agent:
    """One agent in front of one backend. Serve `app()` with aiohttp (run_app, AppRunner)."""

    def __init__(
        self,
        config: AgentConfig,
        build_info: BuildInfo | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = AgentMetrics(start_time=time.time())
        self._build_labels = build_info.labels() if build_info is not None else None
        self._clock = clock
        self._base = config.backend_url
        self._token = f"Bearer {config.metrics_token}".encode() if config.metrics_token else None
        # Relayed traffic and the agent's own probes use separate pools, so /health and
        # /metrics never wait behind max_connections busy streams.
        self._relay_session: aiohttp.ClientSession | None = None
        self._probe_session: aiohttp.ClientSession | None = None
        self._backend_reachable: bool | None = None
        # llama-server's slot count, from its /props (vLLM has none: 404, not asked again).
        self._slots: int | None = None
        self._slots_unknowable = False

    def app(self, middlewares: Sequence[Middleware] = ()) -> web.Application:
        """The aiohttp application; serve it with `handler_cancellation=True` so that a
        client who hangs up cancels its request (and the backend's work on it)."""
        app = web.Application(
            client_max_size=self.config.max_body_bytes, middlewares=list(middlewares)
        )
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_route("*", "/{path:.*}", self._relay)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        app.on_response_prepare.append(_keep_backend_headers)
        return app

    async def _open(self, _: web.Application) -> None:
        config = self.config
        # Nothing is added to a relayed request: not the client's usual Accept,
        # Accept-Encoding, User-Agent or Content-Type defaults, nor cookies.
        common: dict[str, Any] = {
            "auto_decompress": False,
            "cookie_jar": aiohttp.DummyCookieJar(),
            "skip_auto_headers": ("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        }
        self._relay_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config.max_connections, limit_per_host=0),
            read_bufsize=_READ_BUFFER,
            # `connect` would include the wait for a free connection of the pool.
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
            ),
            **common,
        )
        self._probe_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=_PROBE_CONNECTIONS),
            timeout=aiohttp.ClientTimeout(sock_connect=config.connect_timeout),
            **common,
        )
        log.info("relaying to %s", self._base)

    async def _close(self, _: web.Application) -> None:
        for session in (self._relay_session, self._probe_session):
            if session is not None:
                await session.close()

    # --------------------------------------------------------------------- relaying

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        m = self.metrics
        route = route_of(request.path)
        inference = route in INFERENCE_ROUTES
        started = self._clock()
        m.in_flight += 1
        m.queued += 1
        queued = True
        outcome = SERVER_ERROR
        upstream: aiohttp.ClientResponse | None = None
        response: web.StreamResponse | None = None
        try:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                outcome = CLIENT_ERROR
                return _error(413, f"request body over {self.config.max_body_bytes} bytes")
            try:
                upstream = await self._send(request, body)
            except _BackendFailure as failure:
                m.backend_errors[failure.reason] += 1
                self._note_backend(False, str(failure))
                return _error(504 if failure.reason == "timeout" else 502, str(failure))
            self._note_backend(True, "")
            status = upstream.status
            response = _RelayedResponse(
                status=status, reason=upstream.reason, headers=_end_to_end(upstream.raw_headers)
            )
            await response.prepare(request)
            measured = inference and status < 400
            usage = UsageScanner(upstream.headers.get("Content-Type", "")) if measured else None
            try:
                async for chunk in upstream.content.iter_chunked(_RELAY_CHUNK):
                    if queued:
                        queued = False
                        m.queued -= 1
                        if measured:
                            m.ttft.observe(self._clock() - started)
                    await response.write(chunk)
                    if usage is not None:
                        usage.feed(chunk)
            except ConnectionResetError:
                raise  # the client left: below (aiohttp's error for it is a ClientError too)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                broke = _failure(exc)
                m.backend_errors[broke.reason] += 1
                log.warning("backend broke off %s %s: %s", request.method, request.path, broke)
                _abort(request)  # the client must not take a truncated body for a whole one
                return response
            await response.write_eof()
            outcome = outcome_of(status)
            if measured:
                m.e2e.observe(self._clock() - started)
                found = usage.result() if usage is not None else None
                if found is not None:
                    m.prompt_tokens += found.prompt_tokens
                    m.completion_tokens += found.completion_tokens
            return response
        except asyncio.CancelledError:  # the client left: aiohttp cancelled the handler
            outcome = CANCELLED
            raise
        except ConnectionResetError:  # the client left: a write found it gone
            outcome = CANCELLED
            # Whatever is returned is written nowhere; raising would log a traceback.
            return response if response is not None else web.Response(status=499)
        finally:
            if upstream is not None:
                upstream.close()  # a no-op once read to the end; else the backend sees it
            if queued:
                m.queued -= 1
            m.in_flight -= 1
            m.requests[route, outcome] += 1

    async def _send(self, request: web.Request, body: bytes) -> aiohttp.ClientResponse:
        """The backend's response to `request`, headers read, body not yet."""
        assert self._relay_session is not None
        headers = _end_to_end(request.raw_headers, _NOT_RELAYED_REQUEST)
        try:
            return await self._relay_session.request(
                request.method,
                URL(self._base + request.raw_path, encoded=True),
                headers=headers,
                data=body if body or request.body_exists else None,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _failure(exc) from exc

    def _note_backend(self, reachable: bool, detail: str) -> None:
        """Log when the backend becomes unreachable or reachable again, not every request."""
        if reachable != self._backend_reachable:
            if reachable:
                log.info("backend %s answers", self._base)
            else:
                log.warning("backend %s unreachable: %s", self._base, detail)
        self._backend_reachable = reachable

    # --------------------------------------------------------------------- /health

    def _probe(
        self, path: str, seconds: float, headers: dict[str, str] | None = None
    ) -> Any:  # aiohttp's request context manager
        """A GET of the backend's `path` on the probe pool, answered within `seconds`."""
        assert self._probe_session is not None
        return self._probe_session.get(
            self._base + path,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=seconds, sock_connect=self.config.connect_timeout),
        )

    async def _health(self, _: web.Request) -> web.StreamResponse:
        """The backend's own /health answer, or 503 when it gives none in time."""
        try:
            async with self._probe("/health", self.config.health_timeout) as answer:
                body = await answer.content.read(_MAX_HEALTH_BYTES)
                headers = {}
                if "Content-Type" in answer.headers:
                    headers["Content-Type"] = answer.headers["Content-Type"]
                return web.Response(status=answer.status, body=body, headers=headers)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return _error(503, f"backend unreachable: {_failure(exc)}", "unavailable_error")

    # --------------------------------------------------------------------- /metrics

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        if self._token is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, self._token):
                return web.Response(
                    status=401, text="unauthorized\n", headers={"WWW-Authenticate": "Bearer"}
                )
        started = self._clock()
        if self._slots is None and not self._slots_unknowable:
            backend, _ = await asyncio.gather(self._backend_metrics(), self._learn_slots())
        else:
            backend = await self._backend_metrics()
        seconds = self._clock() - started
        own = self.metrics.render(self._build_labels, backend is not None, seconds, self._slots)
        return web.Response(
            body=(own + (backend or "")).encode(), headers={"Content-Type": _METRICS_CONTENT_TYPE}
        )

    async def _backend_metrics(self) -> str | None:
        """The backend's /metrics text, or None when it fails, is late or is no exposition."""
        accept = {"Accept": _METRICS_ACCEPT}
        try:
            async with self._probe("/metrics", self.config.metrics_timeout, accept) as answer:
                if answer.status != 200:
                    log.debug("backend /metrics answered %s", answer.status)
                    return None
                raw = await _read_at_most(answer, MAX_BACKEND_METRICS_BYTES)
                if raw is None:
                    log.debug("backend /metrics larger than %d bytes", MAX_BACKEND_METRICS_BYTES)
                    return None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.debug("backend /metrics failed: %s", _failure(exc))
            return None
        return exposition_text(raw)

    async def _learn_slots(self) -> None:
        """How many requests the backend serves at once, from llama-server's `/props`.

        With it the dashboard can tell running from waiting requests by the agent's own
        count while llama-server's `/metrics` waits out a long prefill. `/props` is answered
        at once (it is not a task in the server's queue). Asked until it answers: a backend
        still loading says 503; a 404 (vLLM) means there is nothing to learn.
        """
        try:
            async with self._probe("/props", self.config.metrics_timeout) as answer:
                if answer.status == 404:
                    self._slots_unknowable = True
                    return
                if answer.status != 200:
                    return
                raw = await _read_at_most(answer, _MAX_PROPS_BYTES)
                if raw is None:
                    return
                props = json.loads(raw)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            log.debug("backend /props failed: %s", exc)
            return
        slots = props.get("total_slots") if isinstance(props, dict) else None
        if isinstance(slots, int) and not isinstance(slots, bool) and slots >= 1:
            self._slots = slots
        else:
            self._slots_unknowable = True  # a /props without a slot count: not llama-server


async def _read_at_most(answer: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None once it grows past `limit` bytes."""
    raw = bytearray()
    async for chunk in answer.content.iter_any():
        raw += chunk
        if len(raw) > limit:
            return None
    return bytes(raw)


def exposition_text(raw: bytes) -> str | None:
    """`raw` as text if it is a Prometheus text exposition (ending with a newline), else None.

    The agent appends the backend's families to its own; a body that is not an exposition
    (an HTML error page, binary garbage) would spoil the whole answer for any parser.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    lines = text.split("\n")
    if not all(map(_EXPOSITION_LINE.fullmatch, lines)):
        return None
    return text if text.endswith("\n") or not text else text + "\n"


def _end_to_end(
    raw: Iterable[tuple[bytes, bytes]], also_drop: frozenset[str] = frozenset()
) -> CIMultiDict[str]:
    """The headers a proxy relays: all but the hop-by-hop ones, as they came (from the raw
    headers: aiohttp's parsed ones have the case of well-known names normalised)."""
    drop = HOP_BY_HOP | also_drop
    relayed: CIMultiDict[str] = CIMultiDict()
    named: list[str] = []
    for raw_name, raw_value in raw:
        name = raw_name.decode("utf-8", "surrogateescape")
        value = raw_value.decode("utf-8", "surrogateescape")
        key = name.lower()
        if key == "connection":
            named.extend(token.strip() for token in value.split(","))
        elif key not in drop:
            relayed.add(name, value)
    for token in named:
        relayed.popall(token, None)
    return relayed


class _RelayedResponse(web.StreamResponse):
    """A response whose headers are the backend's: remembers which ones it sent."""

    def __init__(self, *, status: int, reason: str | None, headers: CIMultiDict[str]) -> None:
        super().__init__(status=status, reason=reason, headers=headers)
        self.backend_headers = frozenset(name.lower() for name in headers)


async def _keep_backend_headers(_: web.Request, response: web.StreamResponse) -> None:
    """Undo what aiohttp adds to a relayed response (`Server`, a default `Content-Type`);
    runs after aiohttp completed the headers and before they are written."""
    if not isinstance(response, _RelayedResponse):
        return
    for name in ("Server", "Content-Type"):
        if name.lower() not in response.backend_headers:
            response.headers.popall(name, None)


def _failure(exc: BaseException) -> _BackendFailure:
    if isinstance(exc, asyncio.TimeoutError):
        return _BackendFailure("timeout", "no answer from the backend in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _BackendFailure("connect", f"cannot connect to the backend: {exc.os_error}")
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return _BackendFailure("disconnect", "the backend dropped the connection")
    return _BackendFailure("invalid", f"not an HTTP answer from the backend ({type(exc).__name__})")


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


def _error(status: int, message: str, kind: str = "backend_error") -> web.Response:
    """An answer of the agent's own, in the OpenAI error shape llama-server uses."""
    return web.json_response(
        {"error": {"code": status, "message": message, "type": kind}}, status=status
    )
