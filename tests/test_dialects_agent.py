"""The agent's dialect: with the wfdash agent in front, QPS, error share and TTFT come from
its families for any backend (measured, never estimated), the backend's families still
give token rates, busy/queue and KV cache, and the build info comes along.

Payloads are the agent's own renderer followed by the sandbox's real-format backend text,
as an agent's /metrics answer is.
"""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from wfdash.agent import BuildInfo
from wfdash.agent.metrics import INFERENCE_ROUTES, AgentMetrics
from wfdash.collect.derive import CounterHistory
from wfdash.collect.dialects import (
    AGENT_FAMILIES,
    AGENT_INFERENCE_ROUTES,
    WANTED_FAMILIES,
    Dialect,
    ReplicaMetrics,
    derive_metrics,
    parse_point,
)
from wfdash.collect.promtext import parse_exposition
from wfdash.sandbox.exposition import (
    LlamaCppCounters,
    VllmCounters,
    render_llamacpp_metrics,
    render_vllm_metrics,
)

BUILD = BuildInfo("bitnet", "tiiuae/Falcon3-7B-Instruct-1.58bit", "i2_s", "v4", False, 312.5)


def agent_text(
    ok: int,
    server_errors: int = 0,
    ttfts: tuple[float, ...] = (),
    *,
    models: int = 0,
    client_errors: int = 0,
    cancelled: int = 0,
    completion_tokens: int = 0,
    build: BuildInfo | None = BUILD,
    backend_up: bool = True,
    in_flight: int = 0,
    queued: int = 0,
    slots: int | None = None,
    start: float = 1_700_000_000.0,
) -> str:
    m = AgentMetrics(start_time=start)
    m.requests["/v1/completions", "ok"] = ok
    m.requests["/v1/chat/completions", "server_error"] = server_errors
    m.requests["/v1/completions", "client_error"] = client_errors
    m.requests["/v1/completions", "cancelled"] = cancelled
    m.requests["/v1/models", "ok"] = models
    m.requests["other", "server_error"] = 1000  # not inference: no part of QPS or errors
    for t in ttfts:
        m.ttft.observe(t)
        m.e2e.observe(t * 2)
    m.completion_tokens = completion_tokens
    m.prompt_tokens = completion_tokens * 2
    m.in_flight, m.queued = in_flight, queued
    return m.render(build.labels() if build else None, backend_up, 0.01, slots)


def llama(generated: int, seconds: float, prompt: int = 0) -> str:
    return render_llamacpp_metrics(
        LlamaCppCounters(
            prompt_tokens_total=prompt,
            prompt_seconds_total=prompt / 13.0,
            tokens_predicted_total=generated,
            tokens_predicted_seconds_total=seconds,
            n_decode_total=generated,
            n_busy_slots_per_decode=1.0,
            kv_cache_usage_ratio=0.5,
            requests_processing=1,
            requests_deferred=2,
        )
    )


def vllm(requests: int, ttfts: tuple[float, ...] = (), generated: int = 0) -> str:
    m = VllmCounters()
    m.finished["stop"] = requests
    for t in ttfts:
        m.ttft.observe(t)
        m.inter_token_latency.observe(0.08)
    m.generation_tokens = generated
    m.prefix_cache_queries = 100 * requests
    m.prefix_cache_hits = 25 * requests
    m.num_requests_running = 3
    return render_vllm_metrics(m)


def series(bodies: list[tuple[float, str]], window: float = 60.0) -> ReplicaMetrics:
    history: CounterHistory | None = None
    metrics = None
    for t, body in bodies:
        point, _ = parse_point(body)
        assert point is not None
        layout = point.layout()
        if history is None:
            history = CounterHistory(layout, 100)
        assert history.layout == layout  # a steady replica keeps one layout
        history.add(t, point.values(layout))
        metrics = derive_metrics(point, history, t, window)
    assert metrics is not None
    return metrics


def test_llamacpp_behind_the_agent_has_measured_qps_and_ttft() -> None:
    before = agent_text(10, 0, (0.3,) * 10, models=50, client_errors=1) + llama(100, 8.0, 300)
    after = agent_text(
        28, 2, (0.3,) * 10 + (0.3,) * 12 + (3.0,) * 8, models=90, client_errors=3
    ) + llama(226, 18.0, 430)
    metrics = series([(0.0, before), (10.0, after)])
    assert metrics.dialect is Dialect.LLAMACPP and metrics.agent
    assert metrics.ttft_is_estimate is False
    # Completions and chat completions of every outcome: (28+2+3) - (10+0+1) in 10 s.
    assert metrics.qps == pytest.approx(2.2)
    assert metrics.error_share == pytest.approx(2 / 22)  # server errors only
    # 20 first tokens in the window: 12 in (0.25, 0.5], 8 in (2.5, 5].
    assert metrics.ttft_p50 == pytest.approx(0.25 + 0.25 * (10 / 12))
    assert metrics.ttft_p95 == pytest.approx(2.5 + 2.5 * (7 / 8))
    assert metrics.ttft_mean == pytest.approx((12 * 0.3 + 8 * 3.0) / 20)
    assert metrics.e2e_mean == pytest.approx(2 * metrics.ttft_mean)
    # Tokens from llama-server's counters, not from the agent's usage sums.
    assert metrics.gen_tps == pytest.approx(12.6)
    assert metrics.decode_tps == pytest.approx(12.6)
    assert metrics.prompt_tps == pytest.approx(13.0)
    assert (metrics.running, metrics.waiting, metrics.kv_usage) == (1, 2, 0.5)
    assert metrics.backend_metrics_ok is True
    assert sum(metrics.ttft_window.values()) > 0


def test_build_info_and_agent_gauges_reach_the_metrics() -> None:
    body = agent_text(1, in_flight=3, queued=2) + llama(0, 0.0)
    metrics = series([(0.0, body)])
    assert (metrics.in_flight, metrics.queued) == (3, 2)
    assert metrics.model == BUILD.model
    assert metrics.quant_type == "i2_s"
    assert metrics.cache_version == "v4"
    assert metrics.cache_hit is False
    assert metrics.build_seconds == 312.5
    assert metrics.qps is None  # one scrape: no rate yet


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (BuildInfo(cache_hit=True, build_seconds=0.0), (None, True, 0.0)),
        (BuildInfo(cache_version="v9"), ("v9", None, None)),
        (None, (None, None, None)),
    ],
)
def test_unknown_build_fields_stay_none(
    build: BuildInfo | None, expected: tuple[str | None, bool | None, float | None]
) -> None:
    metrics = series([(0.0, agent_text(1, build=build) + llama(0, 0.0))])
    assert (metrics.cache_version, metrics.cache_hit, metrics.build_seconds) == expected


def test_vllm_behind_the_agent_takes_requests_and_ttft_from_the_agent() -> None:
    # vLLM's own counts disagree on purpose: the agent's are used.
    before = agent_text(10, 0, (0.05,) * 10) + vllm(500, (9.0,) * 500, generated=1000)
    after = agent_text(30, 0, (0.05,) * 30) + vllm(900, (9.0,) * 900, generated=1500)
    metrics = series([(0.0, before), (10.0, after)])
    assert metrics.dialect is Dialect.VLLM and metrics.agent
    assert metrics.qps == pytest.approx(2.0)
    assert metrics.ttft_p95 is not None and metrics.ttft_p95 <= 0.06
    assert metrics.gen_tps == pytest.approx(50.0)  # vLLM's generation counter
    assert metrics.itl_p50 is not None  # vLLM's own histogram
    assert metrics.prefix_cache_hit == pytest.approx(0.25)
    assert metrics.running == 3


def test_without_backend_families_the_agent_still_gives_its_figures() -> None:
    """The backend's /metrics failed (or it has none): the build says which dialect, and
    the usage sums stand in for token counters."""
    before = agent_text(10, 0, (1.0,) * 10, completion_tokens=100, backend_up=False)
    after = agent_text(14, 4, (1.0,) * 18, completion_tokens=180, backend_up=False)
    metrics = series([(0.0, before), (8.0, after)])
    assert metrics.dialect is Dialect.LLAMACPP  # from the build info's backend label
    assert metrics.backend_metrics_ok is False
    assert metrics.qps == pytest.approx(1.0)
    assert metrics.error_share == pytest.approx(0.5)
    assert metrics.gen_tps == pytest.approx(10.0)
    assert metrics.prompt_tps == pytest.approx(20.0)
    assert metrics.running is None and metrics.kv_usage is None
    alone = series([(0.0, agent_text(1, build=None, backend_up=False))])
    assert alone.dialect is Dialect.UNKNOWN and alone.agent


@pytest.mark.parametrize(
    ("in_flight", "slots", "expected"),
    [(3, 1, (1, 2)), (1, 4, (1, 0)), (0, 1, (0, 0)), (6, 4, (4, 2))],
)
def test_a_late_backend_leaves_running_and_waiting_estimated_from_the_agent(
    in_flight: int, slots: int, expected: tuple[int, int]
) -> None:
    """llama-server's /metrics waits out a long prefill: the agent's in-flight count split
    by the slots it learnt from /props stands in, marked as an estimate."""
    body = agent_text(1, backend_up=False, in_flight=in_flight, queued=in_flight, slots=slots)
    metrics = series([(0.0, body)])
    assert (metrics.running, metrics.waiting) == expected
    assert metrics.busy_is_estimate is True
    assert metrics.slots == slots


def test_the_backends_own_busy_gauges_win_and_no_slots_means_no_estimate() -> None:
    # llama() says 1 running, 2 waiting; the agent's count says otherwise and is not used.
    with_backend = series([(0.0, agent_text(1, in_flight=5, slots=1) + llama(0, 0.0))])
    assert (with_backend.running, with_backend.waiting) == (1, 2)
    assert with_backend.busy_is_estimate is False
    # vLLM has no /props: no slot count, so nothing to split the agent's count by.
    unknown = series([(0.0, agent_text(1, backend_up=False, in_flight=5))])
    assert (unknown.running, unknown.waiting, unknown.busy_is_estimate) == (None, None, False)
    assert unknown.in_flight == 5


def test_the_agents_start_time_marks_restarts() -> None:
    first, _ = parse_point(agent_text(5, start=1000.0) + llama(1, 1.0))
    again, _ = parse_point(agent_text(0, start=2000.0) + llama(1, 1.0))
    assert first is not None and again is not None
    assert (first.created, again.created) == (1000.0, 2000.0)


def test_the_fast_parser_keeps_what_prometheus_client_reads_of_the_agent() -> None:
    body = agent_text(7, 2, (0.01, 0.3, 0.3, 9.0, 3000.0), completion_tokens=12)
    body += llama(5, 1.0)
    reference = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(body)
        if family.name.startswith("wfdash_agent_")
        for s in family.samples
        # Only the sum and count of the e2e histogram are wanted (as for vLLM's).
        if not s.name.startswith("wfdash_agent_e2e_request_latency_seconds_bucket")
        and s.name not in ("wfdash_agent_backend_metrics_seconds",)
        and not s.name.startswith("wfdash_agent_backend_errors")
    }
    fast = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for name, samples in parse_exposition(body, WANTED_FAMILIES).samples.items()
        if name.startswith("wfdash_agent_")
        for s in samples
    }
    assert fast == reference


def test_collector_names_match_the_agents() -> None:
    body = AgentMetrics(0.0).render(BuildInfo().labels(), True, 0.0, 4)
    names = {s.name for f in text_string_to_metric_families(body) for s in f.samples}
    for family in AGENT_FAMILIES:
        assert family in names or f"{family}_bucket" in names, family
    assert AGENT_INFERENCE_ROUTES == INFERENCE_ROUTES


def test_a_nan_request_count_is_skipped() -> None:
    body = agent_text(3).replace(
        'wfdash_agent_requests_total{route="/v1/completions",outcome="ok"} 3',
        'wfdash_agent_requests_total{route="/v1/completions",outcome="ok"} NaN',
    )
    point, _ = parse_point(body)
    assert point is not None and point.counters["requests"] == 0
    assert not math.isnan(point.counters["errors"])


def test_the_backends_families_coming_and_going_leave_the_agents_rates_alone() -> None:
    """The backend's /metrics times out behind the agent for a while (a long prefill), then
    comes back: QPS stays measured throughout, and the backend's token rate comes from the
    samples it has, steady, never a 0 or a blank for the scrapes it missed."""
    from wfdash.collect.poller import PollerConfig, _ReplicaTracker

    config = PollerConfig(metrics_interval=2.0, rate_window=20.0)
    tracker = _ReplicaTracker(10)
    qps: list[float | None] = []
    gen: list[float | None] = []
    for step in range(20):
        t, ok = 1_000.0 + 2 * step, 100 + 3 * step  # 1.5 requests/s all along
        backend_up = not 5 <= step < 10
        body = agent_text(ok, ttfts=(0.5,) * ok, backend_up=backend_up)
        if backend_up:
            body += llama(generated=1_000_000 + 40 * step, seconds=5_000.0 + step)
        point, _ = parse_point(body)
        assert point is not None
        tracker.ingest(point, t, config)
        assert tracker.metrics is not None
        qps.append(tracker.metrics.qps)
        gen.append(tracker.metrics.gen_tps)
    assert qps[0] is None
    assert qps[1:] == pytest.approx([1.5] * 19)  # never blank, never restarted
    assert gen[1:] == pytest.approx([20.0] * 19)
