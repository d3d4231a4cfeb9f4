"""Replica ``/metrics`` dialects → one flat point per scrape → :class:`ReplicaMetrics`.

Two dialects exist today (see shared/facts/metrics.md):

* **vLLM** (0.10–0.12): a request counter by ``finished_reason`` and real latency
  histograms, so QPS, error share and TTFT percentiles are measured.
* **llama.cpp** (BitNet's llama-server, b3920): token counters only — no request
  counter, no latency histogram. Token rates come from the ``_total`` counters (never
  the ``*_tokens_seconds`` gauges, which every scrape resets); QPS is unknown and TTFT
  is an *estimate* from the prefill speed, flagged as such.

The dialect is detected from what the payload contains, not from configuration, so a
backend switch (bitnet ⇄ vllm) shows up by itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from wfdash.collect.derive import CounterHistory, SeriesLayout, histogram_quantile
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
WANTED_FAMILIES = frozenset(VLLM_FAMILIES + LLAMACPP_FAMILIES)

_ERROR_REASONS = frozenset({"abort", "error"})
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

    def layout(self) -> SeriesLayout:
        keys = sorted(self.counters)
        for name in sorted(self.histograms):
            keys.extend(f"{name}@{le!r}" for le in sorted(self.histograms[name]))
        return SeriesLayout(tuple(keys))

    def values(self, layout: SeriesLayout) -> list[float]:
        out: list[float] = []
        for key in layout.keys:
            name, _, le = key.partition("@")
            out.append(self.histograms[name][float(le)] if le else self.counters[name])
        return out


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


def to_point(expo: Exposition) -> MetricPoint | None:
    """The dialect's point, or None when the payload holds no family wfdash knows."""
    if any(name.startswith("vllm:") for name in expo.samples):
        return _vllm_point(expo)
    if any(name.startswith("llamacpp:") for name in expo.samples):
        return _llamacpp_point(expo)
    return None


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
    kv_usage: float | None = None  # 0..1
    prompt_tps: float | None = None  # prompt tokens processed per wall-clock second
    gen_tps: float | None = None  # generated tokens per wall-clock second
    decode_tps: float | None = None  # generation speed while decoding (llama.cpp)
    prefix_cache_hit: float | None = None  # 0..1
    busy_per_decode: float | None = None
    # TTFT bucket increases over the window, for the service-wide (merged) quantiles.
    ttft_window: Mapping[float, float] = field(default_factory=dict)


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def derive_metrics(
    point: MetricPoint, history: CounterHistory, now: float, window: float
) -> ReplicaMetrics:
    """Figures for a replica from its newest point and its counter history."""
    gauges = point.gauges
    base = ReplicaMetrics(
        dialect=point.dialect,
        running=gauges.get("running"),
        waiting=gauges.get("waiting"),
        kv_usage=gauges.get("kv_usage"),
        busy_per_decode=gauges.get("busy_per_decode"),
        ttft_is_estimate=point.dialect is Dialect.LLAMACPP,
    )
    span = history.window(now, window)
    if span is None:
        return base
    elapsed, increase = span

    def inc(key: str) -> float | None:
        pos = history.position(key)
        return increase[pos] if pos is not None else None

    def rate(key: str) -> float | None:
        value = inc(key)
        return value / elapsed if value is not None else None

    if point.dialect is Dialect.LLAMACPP:
        prompt_seconds = inc("prompt_seconds")
        seconds_per_prompt_token = _ratio(prompt_seconds, inc("prompt_tokens"))
        return replace(
            base,
            window_s=elapsed,
            prompt_tps=rate("prompt_tokens"),
            gen_tps=rate("generation_tokens"),
            decode_tps=_ratio(inc("generation_tokens"), inc("generation_seconds")),
            ttft_mean=(
                seconds_per_prompt_token * REFERENCE_PROMPT_TOKENS
                if seconds_per_prompt_token is not None
                else None
            ),
        )

    ttft_window = _window_buckets(history, increase, "ttft")
    itl_window = _window_buckets(history, increase, "itl")
    requests = inc("requests")
    return replace(
        base,
        window_s=elapsed,
        qps=rate("requests"),
        error_share=_ratio(inc("errors"), requests),
        ttft_p50=histogram_quantile(0.5, sorted(ttft_window.items())) if ttft_window else None,
        ttft_p95=histogram_quantile(0.95, sorted(ttft_window.items())) if ttft_window else None,
        ttft_mean=_ratio(inc("ttft_sum"), inc("ttft_count")),
        itl_p50=histogram_quantile(0.5, sorted(itl_window.items())) if itl_window else None,
        e2e_mean=_ratio(inc("e2e_sum"), inc("e2e_count")),
        prompt_tps=rate("prompt_tokens"),
        gen_tps=rate("generation_tokens"),
        prefix_cache_hit=_ratio(inc("prefix_hits"), inc("prefix_queries")),
        ttft_window=ttft_window,
    )


def _window_buckets(
    history: CounterHistory, increase: Sequence[float], name: str
) -> dict[float, float]:
    prefix = f"{name}@"
    out: dict[float, float] = {}
    for pos, key in enumerate(history.layout.keys):
        if key.startswith(prefix):
            out[float(key[len(prefix) :])] = increase[pos]
    return out
