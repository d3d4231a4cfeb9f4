"""Concurrent ``/metrics`` scraping of every replica over one reused httpx client.

One slow, dead or lying replica must never delay or break the others: every request
runs under its own overall deadline (httpx's timeouts are per socket operation, so a
server that drips a byte a second would otherwise never time out), a semaphore bounds
concurrency, and the body is streamed with a size cap.

Each replica origin gets its own small httpx transport (connection pool; all share one
TLS context). One pool for all of them would be simpler, but httpcore's pool scans every
pooled connection on each request: with 1000 replicas that made a cycle O(N²), 5
CPU-seconds at N=200 in tests/benchmarks/bench_ingest.py.

Requests go straight to the transport (`handle_async_request`, httpx's transport API)
rather than through an `httpx.AsyncClient`: a scrape needs none of what the client adds
per request (URL merging, cookie jar, auth flow, redirect loop, event hooks), and that
was a third of the CPU of a scrape. The request carries the same headers and timeouts a
client would send (`_REQUEST_HEADERS`, tested), and the body is read the same way.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from wfdash.collect.kinds import ScrapeError
from wfdash.collect.redact import redact_text


@dataclass(frozen=True, slots=True)
class ScrapeResult:
    url: str | None
    started: float  # wall-clock time the request was sent
    latency_s: float
    nbytes: int
    status_code: int | None = None
    error: ScrapeError | None = None
    detail: str = ""  # one readable line, secrets masked
    body: bytes | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def failed(self, error: ScrapeError, detail: str) -> ScrapeResult:
        """This result turned into a failure (e.g. the body could not be parsed)."""
        return ScrapeResult(
            self.url, self.started, self.latency_s, self.nbytes, self.status_code, error, detail
        )


def metrics_url(endpoint: str | None, path: str = "/metrics") -> str | None:
    """The replica's metrics URL from a SkyServe endpoint ('http://ip:port' or 'ip:port')."""
    if not endpoint:
        return None
    base = endpoint.strip().rstrip("/")
    if "://" not in base:
        base = f"http://{base}"
    return base + path


# What an httpx.AsyncClient would send, and our Accept (httpx adds Host from the URL).
_REQUEST_HEADERS = {
    "Accept-Encoding": "gzip, deflate",
    "Connection": "keep-alive",
    "User-Agent": f"python-httpx/{httpx.__version__}",
    "Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1",
}


class Scraper:
    """Scrapes many URLs at once; always returns one result per URL, never raises."""

    def __init__(
        self,
        *,
        timeout: float = 3.0,
        concurrency: int = 64,
        max_bytes: int = 4 * 1024 * 1024,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._clock = clock
        self._semaphore = asyncio.Semaphore(max(1, concurrency))
        headers = dict(_REQUEST_HEADERS)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._headers = httpx.Headers(headers)
        self._timeouts = httpx.Timeout(timeout).as_dict()
        self._transport = transport  # given (tests): used for every origin
        self._tls: ssl.SSLContext | None = None
        self._transports: dict[str, httpx.AsyncBaseTransport] = {}  # by origin
        self._urls: dict[str, httpx.URL] = {}  # parsed once, not at every scrape

    def _transport_for(self, url: str) -> httpx.AsyncBaseTransport:
        if self._transport is not None:
            return self._transport
        key = _origin(url)
        transport = self._transports.get(key)
        if transport is None:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            transport = self._transports[key] = httpx.AsyncHTTPTransport(
                verify=self._tls,
                trust_env=False,
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
            )
        return transport

    def _request(self, url: str) -> httpx.Request:
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
        return httpx.Request(
            "GET", parsed, headers=self._headers, extensions={"timeout": self._timeouts}
        )

    async def aclose(self) -> None:
        transports, self._transports = list(self._transports.values()), {}
        if self._transport is not None:
            transports.append(self._transport)
        self._urls.clear()
        await asyncio.gather(*(transport.aclose() for transport in transports))

    async def scrape_all(self, urls: Sequence[str | None]) -> list[ScrapeResult]:
        """Scrape every URL at once; pools of origins no longer listed are closed."""
        results = list(await asyncio.gather(*(self.scrape(url) for url in urls)))
        wanted = {_origin(url) for url in urls if url}
        stale = [key for key in self._transports if key not in wanted]
        await asyncio.gather(*(self._transports.pop(key).aclose() for key in stale))
        listed = set(urls)
        if self._urls.keys() - listed:
            self._urls = {url: parsed for url, parsed in self._urls.items() if url in listed}
        return results

    async def scrape(self, url: str | None) -> ScrapeResult:
        started = self._clock()
        if not url:
            return ScrapeResult(
                url, started, 0.0, 0, error=ScrapeError.NO_ENDPOINT, detail="no endpoint"
            )
        async with self._semaphore:
            started = self._clock()
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._fetch(url, started, t0)
            except TimeoutError:
                return self._error(
                    url, started, t0, ScrapeError.TIMEOUT, f"no answer in {self.timeout:g}s"
                )
            except httpx.TimeoutException:
                return self._error(
                    url, started, t0, ScrapeError.TIMEOUT, f"no answer in {self.timeout:g}s"
                )
            except httpx.ConnectError as exc:
                kind = ScrapeError.REFUSED if is_connection_refused(exc) else ScrapeError.NETWORK
                return self._error(url, started, t0, kind, _describe(exc, "connection failed"))
            except (httpx.HTTPError, OSError) as exc:
                return self._error(
                    url, started, t0, ScrapeError.NETWORK, _describe(exc, "network error")
                )

    async def _fetch(self, url: str, started: float, t0: float) -> ScrapeResult:
        response = await self._transport_for(url).handle_async_request(self._request(url))
        try:
            if response.status_code != 200:
                return ScrapeResult(
                    url,
                    started,
                    time.perf_counter() - t0,
                    0,
                    response.status_code,
                    ScrapeError.HTTP,
                    f"HTTP {response.status_code} {response.reason_phrase}".strip(),
                )
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                return self._too_large(url, started, t0, int(declared))
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    return self._too_large(url, started, t0, size)
                chunks.append(chunk)
        finally:
            await response.aclose()
        body = b"".join(chunks)
        return ScrapeResult(url, started, time.perf_counter() - t0, size, 200, body=body)

    def _too_large(self, url: str, started: float, t0: float, size: int) -> ScrapeResult:
        detail = f"body over {self.max_bytes // 1024} KiB cap ({size // 1024} KiB+)"
        return self._error(url, started, t0, ScrapeError.TOO_LARGE, detail, size)

    @staticmethod
    def _error(
        url: str, started: float, t0: float, kind: ScrapeError, detail: str, nbytes: int = 0
    ) -> ScrapeResult:
        return ScrapeResult(
            url, started, time.perf_counter() - t0, nbytes, error=kind, detail=detail
        )


def _origin(url: str) -> str:
    """'http://10.0.0.1:8080' from 'http://10.0.0.1:8080/metrics' (no full URL parse per scrape)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def is_connection_refused(exc: BaseException) -> bool:
    """httpx wraps the OS error a few levels deep; look down the chain for it."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(exc: BaseException, fallback: str) -> str:
    text = str(exc).strip() or type(exc).__name__ or fallback
    return redact_text(text.splitlines()[0])[:200]
