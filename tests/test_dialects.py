"""Dialect detection and per-replica figures from real-format payloads."""

from __future__ import annotations

import pytest

from wfdash.collect.derive import CounterHistory
from wfdash.collect.dialects import (
    REFERENCE_PROMPT_TOKENS,
    Dialect,
    MetricPoint,
    ReplicaMetrics,
    derive_metrics,
    parse_point,
)
from wfdash.sandbox.exposition import (
    LlamaCppCounters,
    VllmCounters,
    render_llamacpp_metrics,
    render_vllm_metrics,
)


def _series(bodies: list[tuple[float, str]], window: float = 60.0) -> ReplicaMetrics:
    history: CounterHistory | None = None
    metrics = None
    for t, body in bodies:
        point, _ = parse_point(body)
        assert point is not None
        layout = point.layout()
        if history is None:
            history = CounterHistory(layout, 100)
        history.add(t, point.values(layout))
        metrics = derive_metrics(point, history, t, window)
    assert metrics is not None
    return metrics


def _vllm(
    requests: int, errors: int = 0, ttfts: tuple[float, ...] = (), legacy: bool = False
) -> str:
    m = VllmCounters()
    m.finished["stop"] = requests - errors
    m.finished["abort"] = errors
    for value in ttfts:
        m.ttft.observe(value)
    m.prompt_tokens = requests * 100
    m.generation_tokens = requests * 50
    m.num_requests_running = 2
    m.num_requests_waiting = 1
    m.kv_cache_usage = 0.25
    return render_vllm_metrics(m, legacy_names=legacy)


def test_vllm_qps_errors_tokens_and_gauges() -> None:
    metrics = _series([(0.0, _vllm(100, 2)), (10.0, _vllm(120, 4))])
    assert metrics.dialect is Dialect.VLLM
    assert metrics.qps == pytest.approx(2.0)
    assert metrics.error_share == pytest.approx(2 / 20)
    assert metrics.gen_tps == pytest.approx(100.0)
    assert metrics.prompt_tps == pytest.approx(200.0)
    assert (metrics.running, metrics.waiting, metrics.kv_usage) == (2, 1, 0.25)
    assert metrics.ttft_is_estimate is False


def test_vllm_ttft_quantiles_come_from_the_window_only() -> None:
    old = (5.0,) * 50  # slow requests before the window
    new = old + (0.3,) * 10  # ten requests of 0.3 s inside the window
    metrics = _series([(0.0, _vllm(50, ttfts=old)), (10.0, _vllm(60, ttfts=new))])
    # All 10 window observations fall in (0.25, 0.5]: p50 interpolates to 0.375.
    assert metrics.ttft_p50 == pytest.approx(0.375)
    assert metrics.ttft_p95 == pytest.approx(0.25 + 0.25 * 0.95)
    assert metrics.ttft_mean == pytest.approx(0.3)


def test_idle_window_has_no_ttft_and_zero_qps() -> None:
    metrics = _series([(0.0, _vllm(10, ttfts=(1.0,) * 10)), (10.0, _vllm(10, ttfts=(1.0,) * 10))])
    assert metrics.qps == 0.0
    assert metrics.ttft_p50 is None and metrics.ttft_p95 is None  # no value, not 0
    assert metrics.error_share is None


def test_legacy_vllm_names_are_read() -> None:
    metrics = _series([(0.0, _vllm(10, legacy=True)), (5.0, _vllm(20, legacy=True))])
    assert metrics.kv_usage == 0.25
    assert metrics.qps == pytest.approx(2.0)


def test_single_scrape_gives_gauges_but_no_rates() -> None:
    metrics = _series([(0.0, _vllm(10))])
    assert metrics.qps is None and metrics.running == 2


def _llama(prompt: int, prompt_s: float, gen: int, gen_s: float, busy: float | None = 1.0) -> str:
    return render_llamacpp_metrics(
        LlamaCppCounters(
            prompt_tokens_total=prompt,
            prompt_seconds_total=prompt_s,
            tokens_predicted_total=gen,
            tokens_predicted_seconds_total=gen_s,
            n_decode_total=gen,
            n_busy_slots_per_decode=busy,
            prompt_tokens_seconds=999.0,  # resetting gauge: must be ignored
            predicted_tokens_seconds=999.0,
            kv_cache_usage_ratio=0.4,
            requests_processing=1,
            requests_deferred=3,
        )
    )


def test_llamacpp_token_rates_from_total_counters_and_marked_estimate() -> None:
    metrics = _series([(0.0, _llama(1000, 76.0, 500, 40.0)), (20.0, _llama(1130, 86.0, 626, 50.0))])
    assert metrics.dialect is Dialect.LLAMACPP
    assert metrics.prompt_tps == pytest.approx(130 / 20)
    assert metrics.gen_tps == pytest.approx(126 / 20)
    assert metrics.decode_tps == pytest.approx(12.6)
    assert metrics.qps is None  # llama-server has no request counter
    assert metrics.ttft_is_estimate is True
    assert metrics.ttft_mean == pytest.approx(10.0 / 130 * REFERENCE_PROMPT_TOKENS)
    assert (metrics.running, metrics.waiting, metrics.kv_usage) == (1, 3, 0.4)


def test_llamacpp_nan_before_first_decode_is_unknown() -> None:
    point, _ = parse_point(_llama(0, 0.0, 0, 0.0, busy=None))
    assert isinstance(point, MetricPoint)
    assert point.gauges["busy_per_decode"] is None


def test_llamacpp_six_significant_digits_parse() -> None:
    metrics = _series(
        [(0.0, _llama(1_234_567, 1e5, 10, 1.0)), (10.0, _llama(1_234_667, 1e5 + 8, 20, 2.0))]
    )
    # 1234567 prints as 1.23457e+06 and 1234667 as 1.23467e+06: 100 tokens in 10 s.
    assert metrics.prompt_tps == pytest.approx(10.0)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        b"\x00\xff\xfe garbage",
        b"http_requests_total 5\n",
        b"vllm",
    ],
)
def test_unknown_payloads_have_no_point(body: bytes) -> None:
    point, _ = parse_point(body)
    assert point is None


def test_backend_switch_changes_the_dialect() -> None:
    a, _ = parse_point(_llama(1, 1.0, 1, 1.0))
    b, _ = parse_point(_vllm(1))
    assert a is not None and b is not None
    assert (a.dialect, b.dialect) == (Dialect.LLAMACPP, Dialect.VLLM)
    assert a.layout() != b.layout()
