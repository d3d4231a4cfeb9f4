"""Replica ``/metrics`` dialects → one flat point per scrape → :class:`ReplicaMetrics`.

Two backend dialects (see shared/facts/metrics.md), and the agent's:

* **vLLM** (0.10–0.12): a request counter by ``finished_reason`` and real latency
  histograms, so QPS, error share and TTFT percentiles are measured.
* **llama.cpp** (BitNet's llama-server, b3920): token counters only — no request
  counter, no latency histogram. Token rates come from the ``_total`` counters (never
  the ``*_tokens_seconds`` gauges, which every scrape resets); QPS is unknown and TTFT
  is an *estimate* from the prefill speed, flagged as such.
* **the wfdash agent** (wfdash/agent, docs/agent.md) in front of either backend: its
  ``wfdash_agent_*`` families come first in the payload, the backend's follow. When they
  are there, QPS, error share and TTFT come from the agent for any backend (measured, not
  estimated); the backend's families still give token rates, busy/queue and KV cache.
  The replica's build (cache version, cache hit, build seconds) comes with them.

The dialect is detected from what the payload contains, not from configuration, so a
backend switch (bitnet ⇄ vllm) shows up by itself. ``Dialect`` names the backend's; an
agent payload is marked by ``agent`` on the point and on the figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypedDict

from wfdash.collect.derive import (
    NAN,
    CounterHistory,
    SeriesLayout,
    histogram_quantile,
    histogram_quantiles,
)
from wfdash.collect.promtext import Exposition, Sample, parse_exposition


class Dialect(StrEnum):
    VLLM = "vllm"
    LLAMACPP = "llamacpp"
    UNKNOWN = "unknown"


VLLM_FAMILIES = (
    "vllm:request_success_total",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:time_per_output_token_seconds",  # name before 0.11
    # Only the mean is used: asking for the sample names skips the 22 bucket lines.
    "vllm:e2e_request_latency_seconds_sum",
    "vllm:e2e_request_latency_seconds_count",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",  # name before 0.11
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:num_preemptions_total",
)
LLAMACPP_FAMILIES = (
    "llamacpp:prompt_tokens_total",
    "llamacpp:prompt_seconds_total",
    "llamacpp:tokens_predicted_total",
    "llamacpp:tokens_predicted_seconds_total",
    "llamacpp:n_decode_total",
    "llamacpp:n_busy_slots_per_decode",
    "llamacpp:kv_cache_usage_ratio",
    "llamacpp:kv_cache_tokens",
    "llamacpp:requests_processing",
    "llamacpp:requests_deferred",
)
# The agent's names (wfdash/agent/metrics.py, tested to match). Not imported from there:
# that package loads aiohttp, which the collection core does not need.
AGENT_PREFIX = "wfdash_agent_"
AGENT_FAMILIES = (
    "wfdash_agent_requests_total",
    "wfdash_agent_requests_in_flight",
    "wfdash_agent_requests_queued",
    "wfdash_agent_time_to_first_token_seconds",
    "wfdash_agent_e2e_request_latency_seconds_sum",
    "wfdash_agent_e2e_request_latency_seconds_count",
    "wfdash_agent_prompt_tokens_total",
    "wfdash_agent_completion_tokens_total",
    "wfdash_agent_backend_metrics_up",
    "wfdash_agent_backend_slots",
    "wfdash_agent_build_info",
    "wfdash_agent_start_time_seconds",
)
AGENT_INFERENCE_ROUTES = frozenset({"/v1/completions", "/v1/chat/completions"})
"""The routes whose requests make a replica's QPS (not /v1/models, not anything else)."""
WANTED_FAMILIES = frozenset(VLLM_FAMILIES + LLAMACPP_FAMILIES + AGENT_FAMILIES)

_ERROR_REASONS = frozenset({"abort", "error"})
_NO_BUCKETS: Mapping[float, float] = {}
# Prompt length the llama.cpp TTFT estimate assumes (the prefill cost of a typical chat turn).
REFERENCE_PROMPT_TOKENS = 128


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One scrape, reduced to what wfdash derives from: counters, gauges, histograms."""

    dialect: Dialect
    counters: Mapping[str, float]
    gauges: Mapping[str, float | None]
    histograms: Mapping[str, Mapping[float, float]]  # name → {le: cumulative count}
    created: float | None = None  # newest ``*_created`` seen: a change means a restart
    agent: bool = False  # the wfdash agent's families were in the payload
    info: Mapping[str, str] = field(default_factory=dict)  # the agent's build-info labels

    def layout(self) -> SeriesLayout:
        keys = sorted(self.counters)
        for name in sorted(self.histograms):
            keys.extend(f"{name}@{le!r}" for le in sorted(self.histograms[name]))
        return SeriesLayout(tuple(keys))

    def values(self, layout: SeriesLayout) -> list[float]:
        """The point's value of each of ``layout``'s series; NaN for one it lacks."""
        counters, histograms = self.counters, self.histograms
        return [
            counters.get(name, NAN)
            if le is None
            else histograms.get(name, _NO_BUCKETS).get(le, NAN)
            for name, le in layout.series
        ]

    def shape(self) -> tuple[object, ...]:
        """What :meth:`layout` depends on, cheaper to get: equal shapes, equal layouts."""
        return (*self.counters, *[(name, *h) for name, h in self.histograms.items()])


def _total(samples: Sequence[Sample] | None) -> float | None:
    if not samples:
        return None
    values = [s.value for s in samples if not math.isnan(s.value)]
    return sum(values) if values else None


def _first(expo: Exposition, *names: str) -> Sequence[Sample] | None:
    for name in names:
        found = expo.samples.get(name)
        if found:
            return found
    return None


def _histogram(expo: Exposition, *families: str) -> dict[float, float] | None:
    """Cumulative buckets of the first family present, summed over non-``le`` labels."""
    samples = _first(expo, *(f"{family}_bucket" for family in families))
    if not samples:
        return None
    buckets: dict[float, float] = {}
    for sample in samples:
        le = sample.labels.get("le")
        if le is None or math.isnan(sample.value):
            continue
        try:
            bound = float(le)
        except ValueError:
            continue
        buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets if math.inf in buckets else None


def _vllm_point(expo: Exposition) -> MetricPoint:
    counters: dict[str, float] = {}
    success = expo.samples.get("vllm:request_success_total", [])
    if success:
        counters["requests"] = sum(s.value for s in success if not math.isnan(s.value))
        counters["errors"] = sum(
            s.value
            for s in success
            if s.labels.get("finished_reason") in _ERROR_REASONS and not math.isnan(s.value)
        )
    for key, name in (
        ("prompt_tokens", "vllm:prompt_tokens_total"),
        ("generation_tokens", "vllm:generation_tokens_total"),
        ("prefix_queries", "vllm:prefix_cache_queries_total"),
        ("prefix_hits", "vllm:prefix_cache_hits_total"),
        ("engine_preemptions", "vllm:num_preemptions_total"),
        ("ttft_sum", "vllm:time_to_first_token_seconds_sum"),
        ("ttft_count", "vllm:time_to_first_token_seconds_count"),
        ("e2e_sum", "vllm:e2e_request_latency_seconds_sum"),
        ("e2e_count", "vllm:e2e_request_latency_seconds_count"),
    ):
        value = _total(expo.samples.get(name))
        if value is not None:
            counters[key] = value
    histograms: dict[str, Mapping[float, float]] = {}
    ttft = _histogram(expo, "vllm:time_to_first_token_seconds")
    if ttft is not None:
        histograms["ttft"] = ttft
    itl = _histogram(expo, "vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
    if itl is not None:
        histograms["itl"] = itl
    gauges = {
        "running": _total(expo.samples.get("vllm:num_requests_running")),
        "waiting": _total(expo.samples.get("vllm:num_requests_waiting")),
        "kv_usage": _total(_first(expo, "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")),
    }
    created = [s.value for s in expo.samples.get("vllm:request_success_created", [])]
    return MetricPoint(Dialect.VLLM, counters, gauges, histograms, max(created, default=None))


def _llamacpp_point(expo: Exposition) -> MetricPoint:
    counters: dict[str, float] = {}
    for key, name in (
        ("prompt_tokens", "llamacpp:prompt_tokens_total"),
        ("prompt_seconds", "llamacpp:prompt_seconds_total"),
        ("generation_tokens", "llamacpp:tokens_predicted_total"),
        ("generation_seconds", "llamacpp:tokens_predicted_seconds_total"),
        ("decode_calls", "llamacpp:n_decode_total"),
    ):
        value = _total(expo.samples.get(name))
        if value is not None:
            counters[key] = value
    gauges = {
        # Typed counter but an average, and -nan before the first decode.
        "busy_per_decode": _total(expo.samples.get("llamacpp:n_busy_slots_per_decode")),
        "running": _total(expo.samples.get("llamacpp:requests_processing")),
        "waiting": _total(expo.samples.get("llamacpp:requests_deferred")),
        "kv_usage": _total(expo.samples.get("llamacpp:kv_cache_usage_ratio")),
        "kv_tokens": _total(expo.samples.get("llamacpp:kv_cache_tokens")),
    }
    return MetricPoint(Dialect.LLAMACPP, counters, gauges, {})


_BACKEND_DIALECTS = {"bitnet": Dialect.LLAMACPP, "vllm": Dialect.VLLM}
"""The build-info ``backend`` label → the dialect, when the backend's families are missing."""


def _agent_point(expo: Exposition, backend: MetricPoint | None) -> MetricPoint:
    """The backend's point (if its families came) with the agent's measurements on top.

    Keys are the ones :func:`derive_metrics` reads for any dialect, so the agent's request
    count, errors (server errors: the backend's 5xx and the agent's 502/504) and TTFT
    replace what vLLM reports itself; token counters stay the backend's, with the agent's
    ``usage`` sums beside them for a backend that has none.
    """
    counters = dict(backend.counters) if backend is not None else {}
    requests = [
        s
        for s in expo.samples.get("wfdash_agent_requests_total", [])
        if s.labels.get("route") in AGENT_INFERENCE_ROUTES and not math.isnan(s.value)
    ]
    if requests:
        counters["requests"] = sum(s.value for s in requests)
        counters["errors"] = sum(
            s.value for s in requests if s.labels.get("outcome") == "server_error"
        )
    for key, name in (
        ("ttft_sum", "wfdash_agent_time_to_first_token_seconds_sum"),
        ("ttft_count", "wfdash_agent_time_to_first_token_seconds_count"),
        ("e2e_sum", "wfdash_agent_e2e_request_latency_seconds_sum"),
        ("e2e_count", "wfdash_agent_e2e_request_latency_seconds_count"),
        ("agent_prompt_tokens", "wfdash_agent_prompt_tokens_total"),
        ("agent_generation_tokens", "wfdash_agent_completion_tokens_total"),
    ):
        value = _total(expo.samples.get(name))
        if value is not None:
            counters[key] = value
    histograms = dict(backend.histograms) if backend is not None else {}
    ttft = _histogram(expo, "wfdash_agent_time_to_first_token_seconds")
    if ttft is not None:
        histograms["ttft"] = ttft
    gauges = dict(backend.gauges) if backend is not None else {}
    gauges["in_flight"] = _total(expo.samples.get("wfdash_agent_requests_in_flight"))
    gauges["queued"] = _total(expo.samples.get("wfdash_agent_requests_queued"))
    gauges["backend_up"] = _total(expo.samples.get("wfdash_agent_backend_metrics_up"))
    gauges["slots"] = _total(expo.samples.get("wfdash_agent_backend_slots"))
    build = expo.samples.get("wfdash_agent_build_info")
    info = dict(build[0].labels) if build else {}
    if backend is not None:
        dialect = backend.dialect
    else:
        dialect = _BACKEND_DIALECTS.get(info.get("backend", ""), Dialect.UNKNOWN)
    # The agent's start, not the backend's: a backend restart behind a running agent
    # resets only the backend's series, which the history corrects one by one.
    started = _total(expo.samples.get("wfdash_agent_start_time_seconds"))
    return MetricPoint(dialect, counters, gauges, histograms, started, agent=True, info=info)


def to_point(expo: Exposition) -> MetricPoint | None:
    """The dialect's point, or None when the payload holds no family wfdash knows."""
    backend = None
    if any(name.startswith("vllm:") for name in expo.samples):
        backend = _vllm_point(expo)
    elif any(name.startswith("llamacpp:") for name in expo.samples):
        backend = _llamacpp_point(expo)
    if any(name.startswith(AGENT_PREFIX) for name in expo.samples):
        return _agent_point(expo, backend)
    return backend


def parse_point(body: str | bytes) -> tuple[MetricPoint | None, Exposition]:
    expo = parse_exposition(body, WANTED_FAMILIES)
    return to_point(expo), expo


@dataclass(frozen=True, slots=True)
class ReplicaMetrics:
    """Derived figures for one replica over the rate window; None means unknown."""

    dialect: Dialect
    window_s: float | None = None  # the span of scrapes the rates were taken over
    qps: float | None = None
    error_share: float | None = None
    ttft_p50: float | None = None
    ttft_p95: float | None = None
    ttft_mean: float | None = None
    ttft_is_estimate: bool = False
    itl_p50: float | None = None
    e2e_mean: float | None = None
    running: float | None = None
    waiting: float | None = None
    busy_is_estimate: bool = False  # running/waiting from the agent's count (see _busy)
    kv_usage: float | None = None  # 0..1
    prompt_tps: float | None = None  # prompt tokens processed per wall-clock second
    gen_tps: float | None = None  # generated tokens per wall-clock second
    decode_tps: float | None = None  # generation speed while decoding (llama.cpp)
    prefix_cache_hit: float | None = None  # 0..1
    busy_per_decode: float | None = None
    # Through the wfdash agent (None/False without one):
    agent: bool = False  # QPS, error share and TTFT measured by the agent
    backend_metrics_ok: bool | None = None  # the backend's own families came along
    in_flight: float | None = None  # requests accepted and not yet fully answered
    queued: float | None = None  # ... of which no response byte came yet (queue, prefill)
    slots: float | None = None  # requests the backend serves at once (llama-server)
    # The replica's build, as its setup wrote it down (agent only):
    model: str | None = None
    quant_type: str | None = None
    cache_version: str | None = None
    cache_hit: bool | None = None  # the build was in the cache under cache_version
    build_seconds: float | None = None  # how long setup's build step took
    # TTFT bucket increases over the window, for the service-wide (merged) quantiles.
    ttft_window: Mapping[float, float] = field(default_factory=dict)


def _busy(gauges: Mapping[str, float | None]) -> tuple[float | None, float | None, bool]:
    """Requests running and waiting, and whether they are an estimate.

    The backend's own gauges when its /metrics came along. Without them (llama-server
    answers /metrics only between decode steps, so a long prefill makes it late) the
    agent's count of requests it relayed and that are not answered yet, split by the
    backend's slot count: llama-server gives a free slot to a request at once, so
    min(in flight, slots) run and the rest wait.
    """
    running, waiting = gauges.get("running"), gauges.get("waiting")
    in_flight, slots = gauges.get("in_flight"), gauges.get("slots")
    if running is None and waiting is None and in_flight is not None and slots:
        running = min(in_flight, slots)
        return running, in_flight - running, True
    return running, waiting, False


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


class _BuildFields(TypedDict):
    model: str | None
    quant_type: str | None
    cache_version: str | None
    cache_hit: bool | None
    build_seconds: float | None


def _build_fields(info: Mapping[str, str]) -> _BuildFields:
    """ReplicaMetrics' build fields from the build-info labels ("" means unknown)."""
    try:
        seconds: float | None = float(info["build_seconds"])
    except (KeyError, ValueError):
        seconds = None
    cache = info.get("cache")
    return {
        "model": info.get("model") or None,
        "quant_type": info.get("quant_type") or None,
        "cache_version": info.get("cache_version") or None,
        "cache_hit": {"hit": True, "miss": False}.get(cache) if cache else None,
        "build_seconds": seconds if seconds is not None and math.isfinite(seconds) else None,
    }


def derive_metrics(
    point: MetricPoint, history: CounterHistory, now: float, window: float
) -> ReplicaMetrics:
    """Figures for a replica from its newest point and its counter history.

    One derivation for every dialect: a figure whose series the point lacks stays None
    (llama-server alone has no request counter, vLLM no decode time).
    """
    gauges = point.gauges
    backend_up = gauges.get("backend_up")
    ttft_is_estimate = point.dialect is Dialect.LLAMACPP and not point.agent
    # Unknown until there are two scrapes in the window.
    elapsed = qps = error_share = ttft_p50 = ttft_p95 = ttft_mean = itl_p50 = None
    e2e_mean = prompt_tps = gen_tps = decode_tps = prefix_cache_hit = None
    running, waiting, busy_is_estimate = _busy(gauges)
    ttft_window: dict[float, float] = {}
    span = history.window(now, window)
    if span is not None:
        elapsed, increase = span.elapsed, span.increase
        positions = history.layout.positions

        def inc(key: str) -> float | None:
            pos = positions.get(key)
            if pos is None or math.isnan(increase[pos]):  # NaN: not two scrapes of it yet
                return None
            return increase[pos]

        def rate(key: str) -> float | None:
            value = inc(key)
            return value / span.seconds(positions[key]) if value is not None else None

        qps = rate("requests")
        error_share = _ratio(inc("errors"), inc("requests"))
        ttft_mean = _ratio(inc("ttft_sum"), inc("ttft_count"))
        if ttft_is_estimate:
            seconds_per_prompt_token = _ratio(inc("prompt_seconds"), inc("prompt_tokens"))
            if seconds_per_prompt_token is not None:
                ttft_mean = seconds_per_prompt_token * REFERENCE_PROMPT_TOKENS
        ttft_window = _window_buckets(history, increase, "ttft")
        if ttft_window:
            ttft_p50, ttft_p95 = histogram_quantiles((0.5, 0.95), ttft_window.items())
        itl_window = _window_buckets(history, increase, "itl")
        itl_p50 = histogram_quantile(0.5, itl_window.items()) if itl_window else None
        e2e_mean = _ratio(inc("e2e_sum"), inc("e2e_count"))
        # A backend without token counters: the agent's sums of `usage`.
        prompt_tps = rate("prompt_tokens")
        if prompt_tps is None:
            prompt_tps = rate("agent_prompt_tokens")
        gen_tps = rate("generation_tokens")
        if gen_tps is None:
            gen_tps = rate("agent_generation_tokens")
        decode_tps = _ratio(inc("generation_tokens"), inc("generation_seconds"))
        prefix_cache_hit = _ratio(inc("prefix_hits"), inc("prefix_queries"))
    return ReplicaMetrics(
        dialect=point.dialect,
        window_s=elapsed,
        qps=qps,
        error_share=error_share,
        ttft_p50=ttft_p50,
        ttft_p95=ttft_p95,
        ttft_mean=ttft_mean,
        ttft_is_estimate=ttft_is_estimate,
        itl_p50=itl_p50,
        e2e_mean=e2e_mean,
        running=running,
        waiting=waiting,
        busy_is_estimate=busy_is_estimate,
        kv_usage=gauges.get("kv_usage"),
        prompt_tps=prompt_tps,
        gen_tps=gen_tps,
        decode_tps=decode_tps,
        prefix_cache_hit=prefix_cache_hit,
        busy_per_decode=gauges.get("busy_per_decode"),
        agent=point.agent,
        backend_metrics_ok=None if backend_up is None else backend_up == 1,
        in_flight=gauges.get("in_flight"),
        queued=gauges.get("queued"),
        slots=gauges.get("slots"),
        **_build_fields(point.info),
        ttft_window=ttft_window,
    )


def _window_buckets(
    history: CounterHistory, increase: Sequence[float], name: str
) -> dict[float, float]:
    buckets = {bound: increase[pos] for bound, pos in history.layout.buckets.get(name, ())}
    # A bucket without two scrapes yet (the histogram appeared inside the window): unknown.
    return {} if any(math.isnan(count) for count in buckets.values()) else buckets
