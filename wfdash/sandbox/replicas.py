"""Emulated inference replicas: real HTTP listeners on 127.0.0.1, two ports each.

A replica emulates BitNet's llama-server (build b3920) or a vLLM v1 server closely enough
for wfdash's real data path: `/health` (503 while the model loads), `/metrics` in each
backend's dialect with its real quirks (see shared facts/metrics.md), and
`/v1/completions`, plain or streamed, taking the time the seeds' benchmarks say it takes.

As on a real replica, the wfdash agent (wfdash/agent) runs in front of the emulated
engine: `url`/`port` are the agent's, the one SkyServe probes and wfdash scrapes, and
`backend_url` the engine's own. Both run in the host's loop.

Every replica of a `ReplicaHost` runs in the host's one asyncio loop, so a hundred of them
cost little: an idle replica is a listening socket and nothing else (no periodic task), and
a busy one wakes at most every `_WAKE_INTERVAL` of real time however fast the clock runs.

Time: the engines work on a simulated timeline scaled by the `SimClock`, and report what
a server would measure on it, in real seconds. With `speed=10`, a replica generates ten
times faster and its timings, counters and histograms show ten times the throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import math
import random
import re
import socket
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from wfdash.agent import Agent, AgentConfig, BuildInfo
from wfdash.sandbox.clock import SimClock
from wfdash.sandbox.exposition import (
    DEFAULT_MAX_MODEL_LEN,
    LlamaCppCounters,
    VllmCounters,
    render_llamacpp_metrics,
    render_vllm_metrics,
)


class Backend(StrEnum):
    BITNET = "bitnet"
    VLLM = "vllm"


class Fault(StrEnum):
    """A misbehaviour to switch on at any time; it applies to requests that arrive after.

    HANG and CLOSE hit every endpoint, `/health` included; HTTP_500 hits `/metrics` and
    completions; GARBAGE and SLOW_METRICS hit `/metrics` only. A replica has two places
    for one: its public port (`set_fault`: what SkyServe and wfdash see, as when the VM or
    the agent misbehaves) and the engine behind the agent (`set_backend_fault`).
    """

    NONE = "none"
    HANG = "hang"
    HTTP_500 = "http-500"
    GARBAGE = "garbage"
    CLOSE = "close"
    SLOW_METRICS = "slow-metrics"


SLOW_METRICS_DELAY = 5.0
"""Real seconds a SLOW_METRICS `/metrics` takes (not scaled: it is there to meet a
scraper's real timeout, as a llama-server busy with a long prompt does)."""


@dataclass(frozen=True, slots=True)
class EngineProfile:
    """How fast one replica serves: tokens/s for one request, and how many it runs at once.

    `slots` and `max_batch` both count the requests served at once: llama-server's
    parallel slots (it decodes all busy slots in one batch) or vLLM's max_num_seqs.
    """

    name: str
    prompt_tps: float
    gen_tps: float
    slots: int
    load_seconds: float
    max_batch: int


# Falcon3-7B-Instruct-1.58bit, one request at a time. Source: the seeds' BitNet inference
# README (shared/seeds/001): c3d-standard-16 measured 2024-12-23 (prompt 13.15 tok/s,
# generation 12.64 tok/s, model load 674 ms); c3d-standard-90 (~60-70 tok/s) and
# h3-standard-88 (~40-50 tok/s) are its linear-scaling estimates. The other rows are ours,
# scaled from c3d-standard-16 by memory bandwidth: a Hetzner AX102 (the SSH pool's hosts)
# x1.2, AWS r7a.4xlarge x1, r7a.2xlarge x0.5.
_HETZNER_AX102 = "hetzner-ax102"
_DEFAULT_INSTANCE = "c3d-standard-16"
_SPEEDS: dict[str, tuple[float, float]] = {
    # instance type: (prompt tok/s, generation tok/s)
    "c3d-standard-16": (13.15, 12.64),
    "c3d-standard-90": (70.0, 65.0),
    "h3-standard-88": (47.0, 45.0),
    "r7a.4xlarge": (13.15, 12.64),
    "r7a.2xlarge": (6.6, 6.3),
    _HETZNER_AX102: (15.8, 15.2),
}
_LOAD_SECONDS = {
    Backend.BITNET: 0.674,  # the seeds' measured model load
    Backend.VLLM: 40.0,  # our estimate: engine start-up and memory profiling take tens of s
}
_VLLM_MAX_BATCH = 8
_BATCH_SLOWDOWN = 0.1
"""How much longer one decode step takes per extra sequence in the batch: on a
memory-bound CPU a batch shares the weight reads, so batching costs little per request."""

# An SSH node pool's instance type: "16CPU--128GB", perhaps with accelerators after it.
_SSH_POOL_INSTANCE = re.compile(r"\d+CPU--\d+GB")


def profile_for(instance_type: str | None, backend: Backend) -> EngineProfile:
    """The engine's speed on `instance_type`; an unknown type runs as a c3d-standard-16."""
    if instance_type and _SSH_POOL_INSTANCE.match(instance_type):
        name = _HETZNER_AX102
    elif instance_type in _SPEEDS:
        name = instance_type
    else:
        name = _DEFAULT_INSTANCE
    prompt_tps, gen_tps = _SPEEDS[name]
    batch = _VLLM_MAX_BATCH if backend is Backend.VLLM else 1
    return EngineProfile(name, prompt_tps, gen_tps, batch, _LOAD_SECONDS[backend], batch)


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """What to start. `slots` is llama-server's; a vLLM replica batches up to its profile's
    `max_batch`. `seed` drives every random choice the replica makes."""

    backend: Backend
    instance_type: str | None = None
    slots: int = 1
    model_name: str = "falcon3-7b-1.58bit"
    seed: int = 0
    # What the emulated setup built (the agent reports it, as setup's build-info file).
    cache_version: str | None = None
    cache_hit: bool | None = None
    build_seconds: float | None = None

    def build_info(self) -> BuildInfo:
        return BuildInfo(
            backend=self.backend.value,
            model=self.model_name,
            quant_type="i2_s" if self.backend is Backend.BITNET else "",
            cache_version=self.cache_version or "",
            cache_hit=self.cache_hit,
            build_seconds=self.build_seconds,
        )


@dataclass(slots=True)
class ReplicaStats:
    """Ground truth of what one replica served, to check the dashboard's numbers against.

    Only completion requests count. `ttft_seconds` holds, per completed request, the real
    seconds from its arrival (queue wait included) to its first token.
    """

    completed: int = 0
    errors: int = 0  # answered with an HTTP error (a fault or a bad request)
    aborted: int = 0  # the client left, or the replica stopped, before the end
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_seconds: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- the engine


@dataclass(eq=False, slots=True)
class _Job:
    """One completion request inside an engine. Times are `loop.time()` values."""

    id: str
    prompt_tokens: int
    max_tokens: int
    planned_tokens: int  # how many it will generate: max_tokens, or fewer at a "stop"
    finish_reason: str
    stream: bool
    include_usage: bool
    text_seed: int
    arrived: float
    admitted: float = math.nan
    first_token: float = math.nan
    finished: float = math.nan
    slot: int = -1
    decoded: int = 0
    done: bool = False
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


class _Recorder(Protocol):
    """A backend's metrics: the engine reports what happens, the recorder counts it."""

    def on_step(self, start: float, end: float, fresh: list[_Job], decoding: list[_Job]) -> None:
        """A decode step ran from `start` to `end`: `fresh` jobs had their prompt processed
        and got their first token, `decoding` ones one more token."""

    def on_finish(self, job: _Job) -> None: ...

    def on_abort(self, job: _Job) -> None: ...

    def on_http(self, seconds: float, request_bytes: int, response_bytes: int) -> None: ...

    def render(self, engine: _Engine) -> str: ...


_WAKE_INTERVAL = 0.01
"""Least real time between two wake-ups of a busy engine: with a fast clock, the steps due
meanwhile run together, so a replica costs the same CPU whatever the speed."""


class _Engine:
    """Continuous batching on a simulated timeline, llama-server's and vLLM's alike.

    Each step admits waiting jobs into free slots (up to `max_batch`), processes the new
    ones' prompts (`prompt_tokens / prompt_tps`, ending with their first token) and gives
    every other running job one token (`1 / gen_tps`, a bit longer for bigger batches).
    Steps run back to back while there is work; the task ends when there is none.

    Event times come from the timeline, not from when the loop got round to them, so the
    numbers a replica reports are exact whatever the load on the loop; the loop only
    decides when clients see them.
    """

    def __init__(self, clock: SimClock, profile: EngineProfile, recorder: _Recorder) -> None:
        self.waiting: deque[_Job] = deque()
        self.running: list[_Job] = []
        self.between_steps = asyncio.Event()
        self.between_steps.set()
        self._clock = clock
        self._profile = profile
        self._recorder = recorder
        self._free_slots = list(range(profile.max_batch))
        self._task: asyncio.Task[None] | None = None

    @property
    def deferred(self) -> int:
        """Waiting jobs that no free slot awaits."""
        return max(0, len(self.waiting) - len(self._free_slots))

    def submit(self, job: _Job) -> None:
        self.waiting.append(job)
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    def cancel(self, job: _Job) -> None:
        """Drop an unfinished job (its client left)."""
        job.done = True
        if job in self.running:
            self.running.remove(job)
            heapq.heappush(self._free_slots, job.slot)
        else:
            self.waiting.remove(job)
        self._recorder.on_abort(job)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            await self._steps()
        finally:
            self._task = None
            self.between_steps.set()

    async def _steps(self) -> None:
        loop = asyncio.get_running_loop()
        end = -math.inf  # the timeline: when the last step ended (none yet)
        last_wake = -math.inf
        while self.waiting or self.running:
            if not self.running:  # idle until the next arrival
                end = max(end, self.waiting[0].arrived)
            start = end
            self._admit(start)
            end = start + self._clock.real(self._step_seconds())
            self.between_steps.clear()
            now = loop.time()
            if end > now:
                await asyncio.sleep(max(end, last_wake + _WAKE_INTERVAL) - now)
                last_wake = loop.time()
            self._complete_step(start, end)
            self.between_steps.set()

    def _admit(self, start: float) -> None:
        waiting = self.waiting
        while waiting and self._free_slots and waiting[0].arrived <= start:
            job = waiting.popleft()
            job.admitted = start
            job.slot = heapq.heappop(self._free_slots)
            self.running.append(job)

    def _step_seconds(self) -> float:
        profile = self._profile
        prompt_tokens = sum(job.prompt_tokens for job in self.running if job.decoded == 0)
        decoding = sum(1 for job in self.running if job.decoded > 0)
        seconds = prompt_tokens / profile.prompt_tps
        if decoding:
            seconds += (1 + _BATCH_SLOWDOWN * (decoding - 1)) / profile.gen_tps
        return seconds

    def _complete_step(self, start: float, end: float) -> None:
        if not self.running:  # the step's only jobs were cancelled meanwhile
            return
        fresh = [job for job in self.running if job.decoded == 0]
        decoding = [job for job in self.running if job.decoded > 0]
        for job in fresh:
            job.first_token = end
        for job in self.running:
            job.decoded += 1
        self._recorder.on_step(start, end, fresh, decoding)
        still_running = []
        for job in self.running:
            if job.decoded >= job.planned_tokens:
                job.finished = end
                job.done = True
                heapq.heappush(self._free_slots, job.slot)
                self._recorder.on_finish(job)
                job.wakeup.set()
            else:
                still_running.append(job)
                if job.stream:
                    job.wakeup.set()
        self.running = still_running


# --------------------------------------------------------------------------- metrics


_N_CTX = 8192
"""llama-server's context (CTX_SIZE in the seeds' configs), shared among its slots."""


class _LlamaCppMetrics:
    """llama-server b3920's `server_metrics`: when each number moves.

    The prompt counters advance when a request gets its first token, `tokens_predicted_*`
    only when it finishes; a request cancelled mid-way never adds its tokens. The two
    throughput gauges cover the window since the previous `/metrics` call.
    """

    def __init__(self, slots: int) -> None:
        self.counters = LlamaCppCounters()
        self._busy_slots_total = 0
        self._slot_tokens = [0] * slots  # each slot keeps its last request in the KV cache
        self._window_prompt_tokens = 0
        self._window_prompt_seconds = 0.0
        self._window_predicted_tokens = 0
        self._window_predicted_seconds = 0.0

    def on_step(self, start: float, end: float, fresh: list[_Job], decoding: list[_Job]) -> None:
        c = self.counters
        c.n_decode_total += 1
        self._busy_slots_total += len(fresh) + len(decoding)
        c.n_busy_slots_per_decode = self._busy_slots_total / c.n_decode_total
        for job in fresh:
            seconds = end - job.admitted
            c.prompt_tokens_total += job.prompt_tokens
            c.prompt_seconds_total += seconds
            self._window_prompt_tokens += job.prompt_tokens
            self._window_prompt_seconds += seconds
        for job in (*fresh, *decoding):
            self._slot_tokens[job.slot] = job.prompt_tokens + job.decoded

    def on_finish(self, job: _Job) -> None:
        seconds = job.finished - job.first_token
        c = self.counters
        c.tokens_predicted_total += job.decoded
        c.tokens_predicted_seconds_total += seconds
        self._window_predicted_tokens += job.decoded
        self._window_predicted_seconds += seconds

    def on_abort(self, job: _Job) -> None:
        """llama-server counts nothing for a cancelled request."""

    def on_http(self, seconds: float, request_bytes: int, response_bytes: int) -> None:
        """llama-server has no HTTP metrics."""

    def render(self, engine: _Engine) -> str:
        c = self.counters
        c.prompt_tokens_seconds = _rate(self._window_prompt_tokens, self._window_prompt_seconds)
        c.predicted_tokens_seconds = _rate(
            self._window_predicted_tokens, self._window_predicted_seconds
        )
        c.kv_cache_tokens = sum(self._slot_tokens)
        c.kv_cache_usage_ratio = c.kv_cache_tokens / _N_CTX
        c.requests_processing = len(engine.running)
        c.requests_deferred = engine.deferred
        self._window_prompt_tokens = self._window_predicted_tokens = 0
        self._window_prompt_seconds = self._window_predicted_seconds = 0.0
        return render_llamacpp_metrics(c)


def _rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds else 0.0


_VLLM_KV_CACHE_TOKENS = 7281 * 16
"""num_gpu_blocks x block_size, as the exposition's `vllm:cache_config_info` says."""


class _VllmMetrics:
    """vLLM v1's stats: per-step ones (tokens, TTFT, inter-token latency) as steps run,
    per-request ones when a request finishes."""

    def __init__(self, created: float, model_name: str) -> None:
        self.counters = VllmCounters(created=created)
        self._model_name = model_name

    def on_step(self, start: float, end: float, fresh: list[_Job], decoding: list[_Job]) -> None:
        c = self.counters
        prompt_tokens = sum(job.prompt_tokens for job in fresh)
        c.prompt_tokens += prompt_tokens
        c.prefix_cache_queries += prompt_tokens
        c.generation_tokens += len(fresh) + len(decoding)
        c.iteration_tokens.observe(prompt_tokens + len(decoding))
        for job in fresh:
            c.ttft.observe(end - job.arrived)
        # Steps run back to back, so every decoding job's previous token came at `start`.
        for _ in decoding:
            c.inter_token_latency.observe(end - start)

    def on_finish(self, job: _Job) -> None:
        c = self.counters
        c.finished[job.finish_reason] += 1
        prefill = job.first_token - job.admitted
        decode = job.finished - job.first_token
        c.e2e_latency.observe(job.finished - job.arrived)
        c.queue_time.observe(job.admitted - job.arrived)
        c.inference_time.observe(job.finished - job.admitted)
        c.prefill_time.observe(prefill)
        c.decode_time.observe(decode)
        c.time_per_prefill_token.observe(prefill / job.prompt_tokens)
        if job.decoded > 1:
            c.request_time_per_output_token.observe(decode / (job.decoded - 1))
        c.prompt_tokens_per_request.observe(job.prompt_tokens)
        c.generation_tokens_per_request.observe(job.decoded)
        c.max_tokens_param.observe(job.max_tokens)
        c.max_num_generation_tokens.observe(job.max_tokens)
        c.params_n.observe(1)

    def on_abort(self, job: _Job) -> None:
        self.counters.finished["abort"] += 1

    def on_http(self, seconds: float, request_bytes: int, response_bytes: int) -> None:
        c = self.counters
        c.http_duration.observe(seconds)
        c.http_request_bytes += request_bytes
        c.http_response_bytes += response_bytes

    def render(self, engine: _Engine) -> str:
        c = self.counters
        c.num_requests_running = len(engine.running)
        c.num_requests_waiting = len(engine.waiting)
        in_cache = sum(job.prompt_tokens + job.decoded for job in engine.running)
        c.kv_cache_usage = in_cache / _VLLM_KV_CACHE_TOKENS
        return render_vllm_metrics(c, self._model_name)


# --------------------------------------------------------------------------- requests


_DEFAULT_MAX_TOKENS = 16
_EARLY_STOP_PROBABILITY = 0.25
"""Share of requests (without `ignore_eos`) that meet an end-of-sequence before max_tokens."""
_WORDS = (
    " the", " model", " runs", " on", " ternary", " weights", " and", " memory",
    " bandwidth", " bounds", " every", " token", " of", " a", " CPU", " replica", ".",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Params:
    prompt_tokens: int
    max_tokens: int
    stream: bool
    ignore_eos: bool
    include_usage: bool


def _parse_params(body: object) -> _Params:
    """The parts of an OpenAI completion request the engines use; ValueError if invalid."""
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise ValueError("'prompt' must be a string")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:  # llama-server's own name for it
        max_tokens = body.get("n_predict", _DEFAULT_MAX_TOKENS)
    if type(max_tokens) is not int or max_tokens < 1:
        raise ValueError("'max_tokens' must be a positive integer")
    options = body.get("stream_options")
    return _Params(
        prompt_tokens=_count_tokens(prompt),
        max_tokens=max_tokens,
        stream=body.get("stream") is True,
        ignore_eos=body.get("ignore_eos") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
    )


def _count_tokens(prompt: str) -> int:
    """A tokenizer's count, estimated: 1.3 tokens a word, at least one."""
    return max(1, round(len(prompt.split()) * 1.3))


def _pieces(seed: int) -> Iterator[str]:
    """A job's generated text, token by token, the same whether streamed or not."""
    rng = random.Random(seed)
    while True:
        yield rng.choice(_WORDS)


_MARK = "\x00"
"""Stands for a token's text in a chunk template; no token contains it."""


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _per_second(n: int, ms: float) -> float | None:
    """llama-server's `1e3 / ms * n`; an infinity, which its JSON writes as null."""
    return 1e3 / ms * n if ms else None


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SHUTDOWN_SECONDS = 0.05
"""How long a stopping replica lets handlers finish before cancelling them."""


# --------------------------------------------------------------------------- replicas


class EmulatedReplica(ABC):
    """One emulated inference server behind its agent, on two loopback ports. Start it with
    a ReplicaHost.

    `ready` turns true once the model has "loaded"; until then every endpoint answers 503.
    `in_flight` counts the completion requests queued or running, for a least-load balancer.
    """

    def __init__(self, spec: ReplicaSpec, profile: EngineProfile, clock: SimClock) -> None:
        self.spec = spec
        self.backend = spec.backend
        self.profile = profile
        self.fault = Fault.NONE  # at the public port (the agent's)
        self.backend_fault = Fault.NONE  # at the engine's port
        self.ready = False
        self.stats = ReplicaStats()
        self.port = 0
        self.url = ""
        self.backend_port = 0
        self.backend_url = ""
        self.agent: Agent | None = None
        self._clock = clock
        self._started = clock.now()
        self._rng = random.Random(spec.seed)
        self._garbage_rng = random.Random(self._rng.getrandbits(64))  # scrapes come any time
        self._recorder = self._make_recorder()
        self._engine = _Engine(clock, profile, self._recorder)
        self._runners: list[web.AppRunner] = []
        self._ready_timer: asyncio.TimerHandle | None = None

    @property
    def in_flight(self) -> int:
        return len(self._engine.waiting) + len(self._engine.running)

    def set_fault(self, fault: Fault) -> None:
        """Misbehave at the public port: the agent's, as SkyServe and wfdash see it."""
        self.fault = fault

    def set_backend_fault(self, fault: Fault) -> None:
        """Misbehave in the engine, behind the agent."""
        self.backend_fault = fault

    # Backend specifics -----------------------------------------------------------------

    @abstractmethod
    def _make_recorder(self) -> _Recorder: ...

    @abstractmethod
    def _add_routes(self, router: web.UrlDispatcher) -> None:
        """Routes only this backend has."""

    @abstractmethod
    def _health(self) -> web.Response: ...

    @abstractmethod
    def _loading(self) -> web.Response: ...

    @abstractmethod
    def _error(self, status: int, message: str) -> web.Response: ...

    @abstractmethod
    def _model_id(self) -> str: ...

    @abstractmethod
    def _model_card(self) -> dict[str, Any]: ...

    @abstractmethod
    def _metrics_response(self, body: str) -> web.Response: ...

    @abstractmethod
    async def _before_metrics(self) -> None:
        """Wait as the real server makes `/metrics` wait, if it does."""

    @abstractmethod
    def _completion_extras(self, job: _Job) -> dict[str, Any]:
        """What a finished completion carries besides its choice (usage, timings)."""

    @abstractmethod
    def _final_chunks(self, job: _Job, last: dict[str, Any]) -> list[dict[str, Any]]:
        """The stream's end: its last token chunk `last` and whatever follows it."""

    # Lifecycle -------------------------------------------------------------------------

    async def _open(self, load_seconds: float) -> None:
        engine = web.Application(middlewares=[self._guard(backend=True)])
        router = engine.router
        router.add_get("/health", self._handle_health)
        router.add_get("/metrics", self._handle_metrics)
        router.add_get("/v1/models", self._handle_models)
        router.add_post("/v1/completions", self._handle_completion)
        self._add_routes(router)
        self.backend_port = await self._serve(engine)
        self.backend_url = f"http://127.0.0.1:{self.backend_port}"
        self.agent = Agent(
            AgentConfig(backend_url=self.backend_url, build_info_path=None),
            self.spec.build_info(),
        )
        self.port = await self._serve(self.agent.app(middlewares=[self._guard(backend=False)]))
        self.url = f"http://127.0.0.1:{self.port}"
        loop = asyncio.get_running_loop()
        self._ready_timer = loop.call_later(self._clock.real(load_seconds), self._loaded)

    async def _serve(self, app: web.Application) -> int:
        """Listen with `app` on a free loopback port; the port."""
        # handler_cancellation: a client that hangs up cancels its handler, which is how a
        # streamed request gets aborted, and how HANG and CLOSE handlers end.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_SECONDS
        )
        await runner.setup()
        self._runners.append(runner)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        port: int = sock.getsockname()[1]
        return port

    def _loaded(self) -> None:
        self.ready = True

    async def _close(self) -> None:
        """Close both ports, the agent's first; requests in flight end with their
        connection."""
        if self._ready_timer is not None:
            self._ready_timer.cancel()
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()
        await self._engine.close()
        self.ready = False

    # Handlers --------------------------------------------------------------------------

    def _guard(self, *, backend: bool) -> Middleware:
        """The faults of one port (the engine's with `backend`, else the agent's); the
        engine also answers 503 while its model loads."""

        @web.middleware
        async def guard(request: web.Request, handler: _Handler) -> web.StreamResponse:
            fault = self.backend_fault if backend else self.fault
            if fault in (Fault.HANG, Fault.CLOSE):
                return await self._never_answer(request, fault)
            if backend and not self.ready:
                return self._loading()
            path = request.path
            if fault is Fault.HTTP_500 and path in ("/metrics", "/v1/completions"):
                if path != "/metrics":
                    self.stats.errors += 1
                return self._error(500, "Internal Server Error")
            if path == "/metrics":
                if fault is Fault.GARBAGE:
                    return self._garbage()
                if fault is Fault.SLOW_METRICS:
                    await asyncio.sleep(SLOW_METRICS_DELAY)
            return await handler(request)

        return guard

    @staticmethod
    async def _never_answer(request: web.Request, fault: Fault) -> web.StreamResponse:
        """Park until aiohttp cancels the handler: the client left or the replica stopped."""
        if fault is Fault.CLOSE and request.transport is not None:
            request.transport.close()
        forever: asyncio.Future[web.StreamResponse] = asyncio.get_running_loop().create_future()
        return await forever

    async def _handle_health(self, _: web.Request) -> web.StreamResponse:
        return self._health()

    async def _handle_models(self, _: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [self._model_card()]})

    async def _handle_metrics(self, _: web.Request) -> web.StreamResponse:
        await self._before_metrics()
        return self._metrics_response(self._recorder.render(self._engine))

    def _garbage(self) -> web.Response:
        """A 200 whose body is no exposition: a proxy's HTML error page or random bytes."""
        rng = self._garbage_rng
        if rng.random() < 0.5:
            page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
            return web.Response(text=page, content_type="text/html")
        return web.Response(body=rng.randbytes(rng.randint(16, 4096)))

    async def _handle_completion(self, request: web.Request) -> web.StreamResponse:
        try:
            params = _parse_params(await request.json())
        except ValueError as error:  # json.JSONDecodeError included
            self.stats.errors += 1
            return self._error(400, str(error))
        job = self._new_job(params)
        self._engine.submit(job)
        try:
            if job.stream:
                response = await self._stream(request, job)
                sent = response.body_length
            else:
                payload = await self._complete(job)
                response = web.Response(body=payload, content_type="application/json")
                sent = len(payload)
        finally:
            if not job.done:
                self._engine.cancel(job)
                self.stats.aborted += 1
        seconds = asyncio.get_running_loop().time() - job.arrived
        self._recorder.on_http(seconds, request.content_length or 0, sent)
        return response

    def _new_job(self, params: _Params) -> _Job:
        rng = self._rng
        planned, reason = params.max_tokens, "length"
        if not params.ignore_eos and rng.random() < _EARLY_STOP_PROBABILITY:
            planned, reason = rng.randint(1, params.max_tokens), "stop"
        return _Job(
            id=f"cmpl-{rng.getrandbits(64):016x}",
            prompt_tokens=params.prompt_tokens,
            max_tokens=params.max_tokens,
            planned_tokens=planned,
            finish_reason=reason,
            stream=params.stream,
            include_usage=params.include_usage,
            text_seed=rng.getrandbits(32),
            arrived=asyncio.get_running_loop().time(),
        )

    def _record_completion(self, job: _Job) -> None:
        stats = self.stats
        stats.completed += 1
        stats.prompt_tokens += job.prompt_tokens
        stats.completion_tokens += job.decoded
        stats.ttft_seconds.append(job.first_token - job.arrived)

    async def _complete(self, job: _Job) -> bytes:
        while not job.done:
            await job.wakeup.wait()
            job.wakeup.clear()
        self._record_completion(job)
        pieces = _pieces(job.text_seed)
        text = "".join(next(pieces) for _ in range(job.decoded))
        body = self._completion(job, text, job.finish_reason) | self._completion_extras(job)
        return json.dumps(body).encode()

    async def _stream(self, request: web.Request, job: _Job) -> web.StreamResponse:
        """Server-sent events: a chunk per token, then `data: [DONE]`."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        # Every chunk but the last differs only in its text: format the rest once.
        head, tail = _sse(self._completion(job, _MARK, None)).split(json.dumps(_MARK))
        pieces = _pieces(job.text_seed)
        sent = 0
        # A client that left makes a write fail before aiohttp cancels this handler: the
        # caller then aborts the job as it does on cancellation.
        with contextlib.suppress(ConnectionResetError):
            while sent < job.decoded or not job.done:
                await job.wakeup.wait()
                job.wakeup.clear()
                texts = [next(pieces) for _ in range(sent, job.decoded)]
                sent = job.decoded
                final: list[dict[str, Any]] = []
                if job.done:
                    self._record_completion(job)
                    final = self._final_chunks(
                        job, self._completion(job, texts.pop(), job.finish_reason)
                    )
                out = "".join(f"{head}{json.dumps(text)}{tail}" for text in texts)
                await response.write((out + "".join(map(_sse, final))).encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        return response

    def _completion(self, job: _Job, text: str, finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": job.id,
            "object": "text_completion",
            "created": int(self._clock.now()),
            "model": self._model_id(),
            "choices": [
                {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
            ],
        }

    @staticmethod
    def _usage(job: _Job) -> dict[str, int]:
        return {
            "prompt_tokens": job.prompt_tokens,
            "completion_tokens": job.decoded,
            "total_tokens": job.prompt_tokens + job.decoded,
        }


class _LlamaServer(EmulatedReplica):
    """BitNet's llama-server, build b3920.

    Its `/v1/completions` answers here in the OpenAI shape newer llama-servers use
    (`usage`, `[DONE]`) plus llama.cpp's `timings`, which b3920 computes as: prompt time
    from slot start to first token; generation time from the first token to the last, yet
    `predicted_n` counts the first token too.
    """

    def _make_recorder(self) -> _Recorder:
        return _LlamaCppMetrics(self.profile.slots)

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/props", self._handle_props)

    async def _handle_props(self, _: web.Request) -> web.StreamResponse:
        settings = {
            "n_ctx": _N_CTX // self.profile.slots,
            "n_predict": -1,
            "model": self._model_id(),
            "seed": 4294967295,
            "temperature": 0.8,
            "top_k": 40,
            "top_p": 0.95,
            "min_p": 0.05,
        }
        return web.json_response(
            {"default_generation_settings": settings, "total_slots": self.profile.slots}
        )

    def _health(self) -> web.Response:
        return web.json_response({"status": "ok"})

    def _loading(self) -> web.Response:
        return self._error(503, "Loading model")

    def _error(self, status: int, message: str) -> web.Response:
        kind = {400: "invalid_request_error", 503: "unavailable_error"}.get(status, "server_error")
        error = {"code": status, "message": message, "type": kind}
        return web.json_response({"error": error}, status=status)

    def _model_id(self) -> str:
        return f"models/{self.spec.model_name}/ggml-model-i2_s.gguf"

    def _model_card(self) -> dict[str, Any]:
        return {
            "id": self._model_id(),
            "object": "model",
            "created": int(self._started),
            "owned_by": "llamacpp",
        }

    def _metrics_response(self, body: str) -> web.Response:
        return web.Response(
            body=body.encode(),
            headers={
                "Content-Type": "text/plain; version=0.0.4",
                "Process-Start-Time-Unix": str(int(self._started)),
            },
        )

    async def _before_metrics(self) -> None:
        """`/metrics` is a task in the server's queue: it waits out the decode step."""
        await self._engine.between_steps.wait()

    def _completion_extras(self, job: _Job) -> dict[str, Any]:
        prompt_ms = (job.first_token - job.admitted) * 1e3
        predicted_ms = (job.finished - job.first_token) * 1e3
        timings = {
            "prompt_n": job.prompt_tokens,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / job.prompt_tokens,
            "prompt_per_second": _per_second(job.prompt_tokens, prompt_ms),
            "predicted_n": job.decoded,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / job.decoded,
            "predicted_per_second": _per_second(job.decoded, predicted_ms),
        }
        return {"usage": self._usage(job), "timings": timings}

    def _final_chunks(self, job: _Job, last: dict[str, Any]) -> list[dict[str, Any]]:
        return [last | self._completion_extras(job)]


class _VllmServer(EmulatedReplica):
    """A vLLM v1 OpenAI server. While loading it answers 503 (the real one is not up yet)."""

    def _make_recorder(self) -> _Recorder:
        return _VllmMetrics(self._started, self.spec.model_name)

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        """Nothing beyond the common routes."""

    def _health(self) -> web.Response:
        return web.Response()

    def _loading(self) -> web.Response:
        return web.Response(status=503)

    def _error(self, status: int, message: str) -> web.Response:
        kind = "BadRequestError" if status == 400 else "InternalServerError"
        body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
        return web.json_response(body, status=status)

    def _model_id(self) -> str:
        return self.spec.model_name

    def _model_card(self) -> dict[str, Any]:
        name = self.spec.model_name
        return {
            "id": name,
            "object": "model",
            "created": int(self._started),
            "owned_by": "vllm",
            "root": name,
            "parent": None,
            "max_model_len": DEFAULT_MAX_MODEL_LEN,
        }

    def _metrics_response(self, body: str) -> web.Response:
        return web.Response(
            body=body.encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )

    async def _before_metrics(self) -> None:
        """The API server answers at once: the engine runs in another process."""

    def _completion(self, job: _Job, text: str, finish_reason: str | None) -> dict[str, Any]:
        body = super()._completion(job, text, finish_reason)
        body["choices"][0]["stop_reason"] = None
        return body

    def _completion_extras(self, job: _Job) -> dict[str, Any]:
        return {"usage": self._usage(job)}

    def _final_chunks(self, job: _Job, last: dict[str, Any]) -> list[dict[str, Any]]:
        """Usage comes in a chunk of its own, and only if `stream_options` asked for it."""
        if not job.include_usage:
            return [last]
        usage = self._completion(job, "", None) | {"usage": self._usage(job)}
        usage["choices"] = []
        return [last, usage]


# --------------------------------------------------------------------------- the host


class ReplicaHost:
    """Starts and stops emulated replicas, all in the running asyncio loop."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.replicas: list[EmulatedReplica] = []

    async def __aenter__(self) -> ReplicaHost:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def start_replica(
        self, spec: ReplicaSpec, *, load_seconds: float | None = None
    ) -> EmulatedReplica:
        """Listen at once (answering 503), and be ready after the model load
        (`load_seconds` of simulated time; the profile's by default)."""
        profile = profile_for(spec.instance_type, spec.backend)
        replica: EmulatedReplica
        if spec.backend is Backend.BITNET:
            profile = replace(profile, slots=spec.slots, max_batch=spec.slots)
            replica = _LlamaServer(spec, profile, self.clock)
        else:
            replica = _VllmServer(spec, profile, self.clock)
        await replica._open(profile.load_seconds if load_seconds is None else load_seconds)
        self.replicas.append(replica)
        return replica

    async def stop_replica(self, replica: EmulatedReplica) -> None:
        """Close its port; its requests in flight end with their connections."""
        self.replicas.remove(replica)
        await replica._close()

    async def close(self) -> None:
        """Stop every replica: no port stays open."""
        replicas, self.replicas = self.replicas, []
        await asyncio.gather(*(replica._close() for replica in replicas))
