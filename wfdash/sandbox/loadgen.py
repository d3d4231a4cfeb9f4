"""A load generator that sends real completions requests and keeps the ground truth.

The dashboard derives request rates and TTFT from the replicas' own ``/metrics``; this
module is the independent witness tests compare those numbers against. It behaves like the
clients behind a SkyServe endpoint plus the endpoint's load balancer:

- arrivals are an open-loop, non-homogeneous Poisson process (a compressed "day" and
  random bursts, see `TrafficShape`), so a slow fleet does not slow the offered load down;
- each arrival goes to the READY replica with the fewest requests in flight, as SkyServe's
  default ``least_load`` policy does (`LeastLoadBalancer`); with no READY replica it fails
  at once, as the LB's 503 does, and nothing is sent;
- every request, whatever happens to it, leaves one `RequestRecord`.

Shape time runs on the event loop's monotonic clock (real seconds since `start`); the
records carry ``clock()`` timestamps, the same clock the scraper stamps samples with, so a
window of records lines up with a window of scrapes.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from typing import Any, cast

import httpx

from wfdash.collect.scrape import is_connection_refused

MAX_RECORDS = 100_000
"""Records kept (oldest dropped first): hours of demo traffic at a few requests a second."""

MAX_LAG = 1.0
"""Seconds an arrival may be overdue before the missed ones are skipped.

Short stalls of the event loop are caught up (the offered load stays right); after a long
one (a suspended laptop, a blocked loop) firing every missed arrival at once would be a
burst nobody asked for.
"""

NO_READY_REPLICA = "no ready replica"
CANCELLED = "cancelled"

_VOCABULARY = (
    "the", "model", "replica", "token", "prompt", "answer", "cluster", "spot", "region",
    "latency", "request", "queue", "batch", "cache", "weights", "ternary", "kernel",
    "serve", "load", "balance", "scale", "window", "metric", "counter", "histogram",
    "stream", "server", "client", "ready", "update", "version", "budget", "cost", "hour",
    "please", "explain", "why", "how", "what", "when", "and", "of", "in", "to", "a",
)  # fmt: skip


@dataclass(frozen=True)
class TrafficShape:
    """How much traffic to offer over time, and what the requests look like.

    The rate is ``base_qps`` times a sinusoidal daily swing (starting at the mean and rising)
    times ``burst_factor`` while a burst is on. Bursts are jittered-periodic: each window of
    ``burst_every`` seconds holds exactly one burst start at a random offset drawn from
    ``burst_seed``, so the mean gap is ``burst_every`` yet any ``rate_at(t)`` is computed in
    O(1) with no state, and a demo never goes without bursts for long.
    """

    base_qps: float = 0.5
    daily_amplitude: float = 0.5
    day_seconds: float = 600.0
    burst_every: float | None = 120.0
    burst_factor: float = 3.0
    burst_seconds: float = 20.0
    prompt_words: tuple[int, int] = (20, 120)
    max_tokens: tuple[int, int] = (16, 64)
    stream_share: float = 0.5
    burst_seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not (self.base_qps >= 0 and math.isfinite(self.base_qps)):
            problems.append("base_qps must be a finite number >= 0")
        if not 0 <= self.daily_amplitude <= 1:
            problems.append("daily_amplitude must be in [0, 1] (the rate cannot go negative)")
        if not self.day_seconds > 0:
            problems.append("day_seconds must be > 0")
        if self.burst_every is not None and not self.burst_every > 0:
            problems.append("burst_every must be > 0 or None")
        if not (self.burst_factor >= 0 and self.burst_seconds >= 0):
            problems.append("burst_factor and burst_seconds must be >= 0")
        for name in ("prompt_words", "max_tokens"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                problems.append(f"{name} must be a range (low, high) with 1 <= low <= high")
        if not 0 <= self.stream_share <= 1:
            problems.append("stream_share must be in [0, 1]")
        if problems:
            raise ValueError("; ".join(problems))

    def rate_at(self, t: float) -> float:
        """Arrival rate (requests per second) ``t`` real seconds after the start."""
        swing = 1.0 + self.daily_amplitude * math.sin(2.0 * math.pi * t / self.day_seconds)
        burst = self.burst_factor if self.in_burst(t) else 1.0
        return max(0.0, self.base_qps * swing * burst)

    def in_burst(self, t: float) -> bool:
        """Whether a burst is on ``t`` seconds after the start."""
        if self.burst_every is None or self.burst_seconds <= 0:
            return False
        every = self.burst_every
        # Bursts longer than the window may start in an earlier window and still be on.
        first = math.floor((t - self.burst_seconds) / every)
        for window in range(first, math.floor(t / every) + 1):
            start = (window + _burst_offset(self.burst_seed, window)) * every
            if start <= t < start + self.burst_seconds:
                return True
        return False

    def peak_rate(self) -> float:
        """An upper bound of `rate_at` over all t (the thinning envelope)."""
        burst = max(1.0, self.burst_factor) if self.burst_every is not None else 1.0
        return self.base_qps * (1.0 + self.daily_amplitude) * burst


@lru_cache(maxsize=4096)
def _burst_offset(seed: int, window: int) -> float:
    """Where in its window burst number ``window`` starts, as a fraction in [0, 1)."""
    # String seeds hash with SHA-512: the same on every run and platform.
    return random.Random(f"burst:{seed}:{window}").random()


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One arrival and what became of it; timestamps are ``clock()`` seconds."""

    target: str  # the replica base URL, "" when none was chosen
    sent_at: float
    first_byte_at: float | None  # first token chunk (streams) or the whole body (JSON)
    done_at: float | None  # None: cancelled by `LoadGenerator.stop` before it finished
    status: int | None  # HTTP status; 503 for "no ready replica", None when none came
    error: str | None
    prompt_tokens: int | None  # from the answer's `usage`, when it had one
    completion_tokens: int | None  # from `usage`, else the streamed token chunks
    stream: bool

    @property
    def ttft(self) -> float | None:
        return None if self.first_byte_at is None else self.first_byte_at - self.sent_at

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


class LeastLoadBalancer:
    """Like SkyServe's least_load policy: pick the READY replica with the fewest requests in
    flight (ties: round robin).

    As in SkyServe (``sky/serve/load_balancing_policies.py``) the tie-break cursor walks the
    whole READY list, so the same replica does not win every tie; the list keeps its order
    while the set of READY replicas is unchanged; a replica that leaves the set loses its
    count at once, and late completions for it are ignored.
    """

    def __init__(self, targets: Callable[[], Sequence[str]]) -> None:
        self._targets = targets
        self._ready: list[str] = []
        self._load: dict[str, int] = {}
        self._cursor = 0

    def pick(self) -> str | None:
        self._refresh()
        if not self._ready:
            return None
        least = min(self._load[url] for url in self._ready)
        count = len(self._ready)
        for offset in range(count):
            index = (self._cursor + offset) % count
            url = self._ready[index]
            if self._load[url] == least:
                self._cursor = (index + 1) % count
                return url
        raise AssertionError("unreachable: the least-loaded replica is in the ready list")

    def begin(self, url: str) -> None:
        if url in self._load:
            self._load[url] += 1

    def end(self, url: str) -> None:
        if url in self._load:
            self._load[url] = max(0, self._load[url] - 1)

    def in_flight(self, url: str) -> int:
        return self._load.get(url, 0)

    def _refresh(self) -> None:
        ready = list(dict.fromkeys(self._targets()))
        if set(ready) != set(self._ready):
            self._ready = ready
            self._load = {url: self._load.get(url, 0) for url in ready}


@dataclass(frozen=True, slots=True)
class _Request:
    prompt: str
    max_tokens: int
    stream: bool


@dataclass(slots=True)
class _Progress:
    """What is known of a request so far, kept when it fails or is cancelled midway."""

    status: int | None = None
    first_byte_at: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class LoadGenerator:
    """Offers `TrafficShape` traffic to the READY replicas ``targets()`` names.

    ``seed`` fixes the arrival times and the requests (prompt, ``max_tokens``, streaming)
    from two separate generators, so the n-th request is the same whether or not earlier
    ones found a replica. Errors of any kind are recorded, never raised.
    """

    def __init__(
        self,
        targets: Callable[[], Sequence[str]],
        shape: TrafficShape | None = None,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        max_in_flight: int = 256,
        timeout: float = 120.0,
        model: str = "default",
    ) -> None:
        self.balancer = LeastLoadBalancer(targets)
        self._shape = shape or TrafficShape()
        self._clock = clock
        self.max_in_flight = max(1, max_in_flight)
        self.timeout = timeout
        self.model = model
        self._arrival_rng = random.Random(f"arrivals:{seed}")
        self._request_rng = random.Random(f"requests:{seed}")
        self.records: deque[RequestRecord] = deque(maxlen=MAX_RECORDS)
        self.sent = 0  # requests that went out to a replica
        self.no_targets = 0  # arrivals that found no READY replica (recorded as 503s)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._requests: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    @property
    def shape(self) -> TrafficShape:
        return self._shape

    @property
    def in_flight(self) -> int:
        return len(self._requests)

    async def start(self) -> None:
        """Start offering load from a background task of the running loop."""
        if self._task is not None:
            raise RuntimeError("the load generator is already running")
        # One connection per request in flight, all kept alive for reuse: a smaller pool
        # would queue requests on the client side and count that wait as replica TTFT.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(
                max_connections=self.max_in_flight,
                max_keepalive_connections=self.max_in_flight,
                keepalive_expiry=60,
            ),
            trust_env=False,
        )
        self._wake = asyncio.Event()  # bound to this loop on first use
        self._task = asyncio.create_task(self._arrivals(), name="wfdash-loadgen")

    async def stop(self) -> None:
        """Stop the arrivals, cancel the requests in flight and close the connections.

        Re-raises what crashed the arrivals, if anything did (a ``targets`` callable that
        raised, say): request errors are recorded, but a dead generator must not pass for
        an idle one.
        """
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        requests = list(self._requests)
        for request in requests:
            request.cancel()
        outcomes = await asyncio.gather(task, *requests, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if isinstance(outcomes[0], Exception):
            raise outcomes[0]

    def set_rate(self, base_qps: float) -> None:
        """Change the mean rate now; the daily phase and the burst schedule carry on."""
        self._shape = replace(self._shape, base_qps=base_qps)
        self._wake.set()

    def completed_between(self, t0: float, t1: float) -> list[RequestRecord]:
        """Records (successes and failures) that finished in ``[t0, t1)``."""
        return [r for r in self.records if r.done_at is not None and t0 <= r.done_at < t1]

    def qps_between(self, t0: float, t1: float) -> float:
        """Successful completions per second in ``[t0, t1)``, as a replica's counter sees them."""
        if t1 <= t0:
            return 0.0
        return sum(1 for r in self.completed_between(t0, t1) if r.ok) / (t1 - t0)

    def ttft_quantile(self, q: float, t0: float, t1: float) -> float | None:
        """The ``q`` quantile of the TTFT of successes finished in ``[t0, t1)``.

        Exact, interpolating linearly between order statistics; None without samples.
        """
        if not 0 <= q <= 1:
            raise ValueError("q must be in [0, 1]")
        samples = sorted(
            r.ttft for r in self.completed_between(t0, t1) if r.ok and r.ttft is not None
        )
        if not samples:
            return None
        position = q * (len(samples) - 1)
        low = math.floor(position)
        high = min(low + 1, len(samples) - 1)
        return samples[low] + (samples[high] - samples[low]) * (position - low)

    async def _arrivals(self) -> None:
        loop = asyncio.get_running_loop()
        origin = loop.time()
        cursor = 0.0  # shape time of the last arrival (or of the last re-draw)
        while True:
            self._wake.clear()
            due = _next_arrival(self._shape, cursor, self._arrival_rng)
            now = loop.time() - origin
            if due is None:  # no traffic until `set_rate` says otherwise
                await self._wake.wait()
                cursor = loop.time() - origin
                continue
            if due > now:
                if await self._sleep(due - now):
                    # The rate changed: by memorylessness, draw afresh from now.
                    cursor = loop.time() - origin
                    continue
            elif now - due > MAX_LAG:
                cursor = now
                continue
            else:
                await asyncio.sleep(0)  # catching up: still let the requests run
            cursor = due
            self._arrive()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep ``seconds``; True when `set_rate` cut the sleep short."""
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True

    def _arrive(self) -> None:
        request = self._draw_request()
        if len(self._requests) >= self.max_in_flight:
            self._record_unsent(request, None, f"over {self.max_in_flight} requests in flight")
            return
        url = self.balancer.pick()
        if url is None:
            self.no_targets += 1
            self._record_unsent(request, 503, NO_READY_REPLICA)
            return
        # Counted before the task first runs, so the next arrival already sees this load.
        self.balancer.begin(url)
        task = asyncio.create_task(self._send(url, request))
        self._requests.add(task)
        task.add_done_callback(partial(self._settle, url))

    def _settle(self, url: str, task: asyncio.Task[None]) -> None:
        # A done callback, not a `finally`: a task cancelled before its first step never
        # runs its body, yet must still release its load.
        self._requests.discard(task)
        self.balancer.end(url)

    def _draw_request(self) -> _Request:
        rng, shape = self._request_rng, self._shape
        words = rng.choices(_VOCABULARY, k=rng.randint(*shape.prompt_words))
        return _Request(
            prompt=" ".join(words),
            max_tokens=rng.randint(*shape.max_tokens),
            stream=rng.random() < shape.stream_share,
        )

    def _record_unsent(self, request: _Request, status: int | None, error: str) -> None:
        now = self._clock()
        self.records.append(
            RequestRecord("", now, None, now, status, error, None, None, request.stream)
        )

    async def _send(self, url: str, request: _Request) -> None:
        assert self._client is not None
        self.sent += 1
        progress = _Progress()
        sent_at = self._clock()
        error: str | None
        try:
            async with asyncio.timeout(self.timeout):
                error = await self._exchange(self._client, url, request, progress)
        except (TimeoutError, httpx.TimeoutException):
            error = f"timeout after {self.timeout:g}s"
        except asyncio.CancelledError:
            self._record(url, request, sent_at, progress, CANCELLED, done=False)
            raise
        except (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL, OSError) as exc:
            error = _describe(exc)
        except ValueError as exc:  # the body is not JSON
            error = f"unparsable answer: {_first_line(exc)}"
        self._record(url, request, sent_at, progress, error, done=True)

    def _record(
        self,
        url: str,
        request: _Request,
        sent_at: float,
        progress: _Progress,
        error: str | None,
        *,
        done: bool,
    ) -> None:
        self.records.append(
            RequestRecord(
                target=url,
                sent_at=sent_at,
                first_byte_at=progress.first_byte_at,
                done_at=self._clock() if done else None,
                status=progress.status,
                error=error,
                prompt_tokens=progress.prompt_tokens,
                completion_tokens=progress.completion_tokens,
                stream=request.stream,
            )
        )

    async def _exchange(
        self, client: httpx.AsyncClient, url: str, request: _Request, progress: _Progress
    ) -> str | None:
        """Send one request and read the answer; the error text, or None on success."""
        payload = {
            "model": self.model,
            "prompt": request.prompt,
            "max_tokens": request.max_tokens,
            "stream": request.stream,
        }
        async with client.stream("POST", _completions_url(url), json=payload) as response:
            progress.status = response.status_code
            if response.status_code != 200:
                return f"HTTP {response.status_code} {response.reason_phrase}".strip()
            if request.stream:
                return await self._read_stream(response, progress)
            body = await response.aread()
            progress.first_byte_at = self._clock()
        answer = json.loads(body)
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            return "unexpected answer: no choices"
        _take_usage(answer, progress)
        return None

    async def _read_stream(self, response: httpx.Response, progress: _Progress) -> str | None:
        """Read SSE chunks to the end of the body (so the connection can be reused)."""
        finished = False
        data_lines = tokens = 0
        # Closed here, not by the garbage collector: the loop would close an abandoned async
        # generator (on garbage, say) from a task of its own, after `stop` returned.
        lines = cast("AsyncGenerator[str, None]", response.aiter_lines())
        async with aclosing(lines):
            async for line in lines:
                if not line.startswith("data:"):
                    continue  # blank separators, ": keep-alive" comments, "event:" lines
                data_lines += 1
                data = line.removeprefix("data:").strip()
                if data == "[DONE]":
                    finished = True
                    continue
                chunk = json.loads(data)
                if not isinstance(chunk, dict):
                    return "unparsable answer: an SSE chunk is not an object"
                _take_usage(chunk, progress)
                for choice in chunk.get("choices") or ():
                    if not isinstance(choice, dict):
                        continue
                    if choice.get("text"):
                        tokens += 1
                        if progress.first_byte_at is None:
                            progress.first_byte_at = self._clock()
                    # llama-server's OpenAI-compatible stream may end on a finish_reason
                    # without a [DONE] line.
                    finished = finished or bool(choice.get("finish_reason"))
        if progress.completion_tokens is None:
            progress.completion_tokens = tokens
        if finished:
            return None
        if not data_lines:
            return "unparsable answer: no SSE data"
        return "stream ended before the answer did"


def _next_arrival(shape: TrafficShape, after: float, rng: random.Random) -> float | None:
    """The next arrival after shape time ``after``, by thinning (Lewis and Shedler).

    Candidates come at the peak rate; each is kept with probability rate/peak, which yields
    a Poisson process of the time-varying rate. None when the rate is zero for good.
    """
    peak = shape.peak_rate()
    if peak <= 0:
        return None
    t = after
    while True:
        t += rng.expovariate(peak)
        if rng.random() * peak < shape.rate_at(t):
            return t


def _take_usage(answer: dict[str, Any], progress: _Progress) -> None:
    usage = answer.get("usage")
    if not isinstance(usage, dict):
        return
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int):
        progress.prompt_tokens = prompt
    if isinstance(completion, int):
        progress.completion_tokens = completion


def _completions_url(base: str) -> str:
    base = base.strip().rstrip("/")
    if "://" not in base:
        base = f"http://{base}"  # SkyServe lists replica endpoints as "ip:port"
    return base + "/v1/completions"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectError) and is_connection_refused(exc):
        return "connection refused"
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
