"""Concurrent ``/metrics`` scraping of every replica over one reused httpx client.

One slow, dead or lying replica must never delay or break the others: every request
runs under its own overall deadline (httpx's timeouts are per socket operation, so a
server that drips a byte a second would otherwise never time out), a semaphore bounds
concurrency, and the body is streamed with a size cap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import httpx

from wfdash.collect.redact import redact_text


class ScrapeError(StrEnum):
    TIMEOUT = "timeout"
    REFUSED = "refused"
    HTTP = "http"
    TOO_LARGE = "too-large"
    UNPARSABLE = "unparsable"
    NETWORK = "network"
    NO_ENDPOINT = "no-endpoint"


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
        headers = {"Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # Concurrency is bounded by the semaphore; the pool itself must be able to keep
        # one idle keep-alive connection per replica, or 1000 replicas would reconnect
        # every cycle.
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=4096, keepalive_expiry=120
            ),
            transport=transport,
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def scrape_all(self, urls: Sequence[str | None]) -> list[ScrapeResult]:
        return list(await asyncio.gather(*(self.scrape(url) for url in urls)))

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
                kind = ScrapeError.REFUSED if _refused(exc) else ScrapeError.NETWORK
                return self._error(url, started, t0, kind, _describe(exc, "connection failed"))
            except (httpx.HTTPError, OSError) as exc:
                return self._error(
                    url, started, t0, ScrapeError.NETWORK, _describe(exc, "network error")
                )

    async def _fetch(self, url: str, started: float, t0: float) -> ScrapeResult:
        async with self._client.stream("GET", url) as response:
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


def _refused(exc: BaseException) -> bool:
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
