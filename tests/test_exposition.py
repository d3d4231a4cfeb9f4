"""The sandbox's `/metrics` renderers write the two real dialects.

llama.cpp's text is checked against a known llama-server b3920 body and against libc's
`%g`; vLLM's against what prometheus_client itself writes for the same metric values.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client import Histogram as PromHistogram
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from wfdash.sandbox.exposition import (
    FINISH_REASONS,
    HTTP_DURATION_BUCKETS,
    TTFT_BUCKETS,
    Histogram,
    LlamaCppCounters,
    VllmCounters,
    c_double,
    go_float,
    render_llamacpp_metrics,
    render_vllm_metrics,
    token_count_buckets,
)

# A freshly started llama-server b3920 on Linux, before any request.
LLAMACPP_IDLE = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 0
# HELP llamacpp:prompt_seconds_total Prompt process time
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 0
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 0
# HELP llamacpp:tokens_predicted_seconds_total Predict process time
# TYPE llamacpp:tokens_predicted_seconds_total counter
llamacpp:tokens_predicted_seconds_total 0
# HELP llamacpp:n_decode_total Total number of llama_decode() calls
# TYPE llamacpp:n_decode_total counter
llamacpp:n_decode_total 0
# HELP llamacpp:n_busy_slots_per_decode Average number of busy slots per llama_decode() call
# TYPE llamacpp:n_busy_slots_per_decode counter
llamacpp:n_busy_slots_per_decode -nan
# HELP llamacpp:prompt_tokens_seconds Average prompt throughput in tokens/s.
# TYPE llamacpp:prompt_tokens_seconds gauge
llamacpp:prompt_tokens_seconds 0
# HELP llamacpp:predicted_tokens_seconds Average generation throughput in tokens/s.
# TYPE llamacpp:predicted_tokens_seconds gauge
llamacpp:predicted_tokens_seconds 0
# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio 0
# HELP llamacpp:kv_cache_tokens KV-cache tokens.
# TYPE llamacpp:kv_cache_tokens gauge
llamacpp:kv_cache_tokens 0
# HELP llamacpp:requests_processing Number of request processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 0
# HELP llamacpp:requests_deferred Number of request deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 0
"""


def test_llamacpp_idle_body_is_llama_servers() -> None:
    assert render_llamacpp_metrics(LlamaCppCounters()) == LLAMACPP_IDLE


def test_llamacpp_has_exactly_the_12_families() -> None:
    body = render_llamacpp_metrics(LlamaCppCounters(n_decode_total=5, n_busy_slots_per_decode=1))
    families = list(text_string_to_metric_families(body))
    assert len(families) == 12
    assert all(len(f.samples) == 1 and not f.samples[0].labels for f in families)
    assert "# TYPE llamacpp:n_busy_slots_per_decode counter\n" in body
    assert "llamacpp:n_busy_slots_per_decode 1\n" in body
    assert all(line.startswith(("# ", "llamacpp:")) for line in body.splitlines())


def test_llamacpp_prints_six_significant_digits() -> None:
    body = render_llamacpp_metrics(
        LlamaCppCounters(
            prompt_tokens_total=1234567,
            prompt_seconds_total=2903.6349,
            tokens_predicted_total=100000,
            kv_cache_usage_ratio=1.2345e-5,
            n_busy_slots_per_decode=2.0,
        )
    )
    assert "llamacpp:prompt_tokens_total 1.23457e+06\n" in body
    assert "llamacpp:prompt_seconds_total 2903.63\n" in body
    assert "llamacpp:tokens_predicted_total 100000\n" in body
    assert "llamacpp:kv_cache_usage_ratio 1.2345e-05\n" in body
    assert "llamacpp:n_busy_slots_per_decode 2\n" in body


LIBC = ctypes.util.find_library("c")


def _libc_g(value: float) -> str:
    buffer = ctypes.create_string_buffer(64)
    ctypes.CDLL(LIBC).snprintf(buffer, 64, b"%g", ctypes.c_double(value))
    return buffer.value.decode()


@pytest.mark.skipif(LIBC is None, reason="needs the C library")
@settings(max_examples=200, deadline=None)
@given(st.one_of(st.floats(), st.integers(0, 10**15).map(float), st.just(-math.nan)))
def test_c_double_is_printf_g(value: float) -> None:
    assert c_double(value) == _libc_g(value)


# --------------------------------------------------------------------------- vLLM


def busy_vllm(seed: int = 0, requests: int = 3000) -> VllmCounters:
    rng = random.Random(seed)
    m = VllmCounters(created=1.7e9 + seed)
    for _ in range(requests):
        m.finished[rng.choice(FINISH_REASONS)] += 1
        m.ttft.observe(rng.lognormvariate(-1, 1.5))
        m.inter_token_latency.observe(rng.lognormvariate(-3, 0.5))
        m.request_time_per_output_token.observe(rng.lognormvariate(-3, 0.5))
        for hist in (
            m.e2e_latency,
            m.queue_time,
            m.inference_time,
            m.prefill_time,
            m.decode_time,
            m.http_duration,
        ):
            hist.observe(rng.lognormvariate(0, 1.5))
        m.time_per_prefill_token.observe(rng.random() / 100)
        for hist in (
            m.prompt_tokens_per_request,
            m.generation_tokens_per_request,
            m.max_tokens_param,
            m.max_num_generation_tokens,
            m.iteration_tokens,
        ):
            hist.observe(rng.randint(1, 4000))
        m.params_n.observe(1)
    m.prompt_tokens = m.prompt_tokens_per_request.count * 700
    m.generation_tokens = 1234567
    m.http_request_bytes = 1.5e6
    m.http_response_bytes = 9.1e6
    return m


def test_vllm_payload_has_a_real_replicas_size() -> None:
    body = render_vllm_metrics(busy_vllm())
    assert 40_000 <= len(body.encode()) <= 70_000
    assert 480 <= body.count("\n") <= 650
    assert body.endswith("\n")
    assert "\n\n" not in body


@pytest.mark.parametrize("legacy_names", [False, True])
@pytest.mark.parametrize("with_process_metrics", [False, True])
def test_vllm_payload_parses_with_prometheus_client(
    legacy_names: bool, with_process_metrics: bool
) -> None:
    for m in (VllmCounters(), busy_vllm()):
        body = render_vllm_metrics(m, "org/model", with_process_metrics, legacy_names)
        families = {f.name: f for f in text_string_to_metric_families(body)}
        assert ("process_cpu_seconds" in families) == with_process_metrics
        assert ("vllm:gpu_cache_usage_perc" in families) == legacy_names
        assert ("vllm:kv_cache_usage_perc" in families) == (not legacy_names)
        assert ("vllm:time_per_output_token_seconds" in families) == legacy_names
        assert ("vllm:inter_token_latency_seconds" in families) == (not legacy_names)
        for family in families.values():  # prometheus_client writes `*_created` but for
            if family.type in ("counter", "histogram", "summary") and not family.name.startswith(
                ("python_", "process_")  # the collectors of the Python process
            ):
                assert families[f"{family.name}_created"].type == "gauge"
        success = families["vllm:request_success"].samples
        assert {s.labels["finished_reason"] for s in success} == set(FINISH_REASONS)
        assert {s.labels["model_name"] for s in success} == {"org/model"}
        assert {s.labels["engine"] for s in success} == {"0"}


def test_ttft_bucket_bounds() -> None:
    body = render_vllm_metrics(busy_vllm())
    bounds = re.findall(r'^vllm:time_to_first_token_seconds_bucket\{.*le="([^"]+)"', body, re.M)
    expected = "0.001 0.005 0.01 0.02 0.04 0.06 0.08 0.1 0.25 0.5 0.75 1 2.5 5 7.5 10 20 40 80 160"
    expected += " 640 2560"
    assert [float(bound) for bound in bounds[:-1]] == [float(b) for b in expected.split()]
    assert bounds[-1] == "+Inf"
    assert tuple(float(bound) for bound in bounds[:-1]) == TTFT_BUCKETS
    assert bounds[11] == "1.0"  # prometheus_client writes floats the Go way


def test_model_name_is_escaped() -> None:
    name = 'we"ird\\model\nname'
    body = render_vllm_metrics(VllmCounters(), name)
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["vllm:num_requests_running"].samples[0].labels["model_name"] == name


def _blocks(body: str) -> dict[str, str]:
    """Family name → its text, with every `*_created` value blanked (a clock reading)."""
    body = re.sub(r"^(\S+_created(?:\{[^}]*\})?) \S+$", r"\1 <created>", body, flags=re.M)
    return {
        block.split(" ", 1)[0]: block for block in re.split(r"^# HELP ", body, flags=re.M) if block
    }


def test_vllm_text_is_what_prometheus_client_writes() -> None:
    """Mirror a few families in a prometheus_client registry, feed both the same values,
    and compare the text: numbers, label order, `_created` families, everything."""
    rng = random.Random(3)
    m = VllmCounters()
    registry = CollectorRegistry()
    labels = {"model_name": "org/m", "engine": "0"}
    ttft = PromHistogram(
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        list(labels),
        registry=registry,
        buckets=TTFT_BUCKETS,
    ).labels(**labels)
    success = Counter(
        "vllm:request_success",
        "Count of successfully processed requests.",
        [*labels, "finished_reason"],
        registry=registry,
    )
    prompt = Counter(
        "vllm:prompt_tokens", "Number of prefill tokens processed.", list(labels), registry=registry
    ).labels(**labels)
    running = Gauge(
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        list(labels),
        registry=registry,
    ).labels(**labels)
    for reason in FINISH_REASONS:
        success.labels(**labels, finished_reason=reason)
    for _ in range(500):
        value = rng.lognormvariate(0, 3)
        ttft.observe(value)
        m.ttft.observe(value)
        reason = rng.choice(FINISH_REASONS)
        success.labels(**labels, finished_reason=reason).inc()
        m.finished[reason] += 1
    prompt.inc(12345678)
    m.prompt_tokens = 12345678
    running.set(7)
    m.num_requests_running = 7

    ours = _blocks(render_vllm_metrics(m, "org/m"))
    theirs = _blocks(generate_latest(registry).decode())
    assert set(theirs) <= set(ours)
    for name, block in theirs.items():
        assert ours[name] == block, name


def test_histogram_observe_is_cumulative_with_inclusive_bounds() -> None:
    hist = Histogram((1.0, 2.0, 5.0))
    for value in (0.5, 1.0, 1.5, 5.0, 7.0):
        hist.observe(value)
    assert hist.counts == [2, 3, 4]
    assert hist.count == 5
    assert hist.sum == 15.0


def test_http_histograms_agree() -> None:
    m = busy_vllm(requests=200)
    families = {f.name: f for f in text_string_to_metric_families(render_vllm_metrics(m))}
    fine = {
        float(s.labels["le"]): s.value
        for s in families["http_request_duration_highr_seconds"].samples
        if s.name.endswith("_bucket")
    }
    coarse = {
        float(s.labels["le"]): s.value
        for s in families["http_request_duration_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert coarse == {bound: fine[bound] for bound in (0.1, 0.5, 1.0, math.inf)}
    assert len(fine) == len(HTTP_DURATION_BUCKETS) + 1


def test_token_count_buckets() -> None:
    assert token_count_buckets(4096) == (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
    assert token_count_buckets(100) == (1, 2, 5, 10, 20, 50, 100)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(), st.integers(-(10**20), 10**20)))
def test_go_float_is_prometheus_clients(value: float) -> None:
    assert go_float(value) == floatToGoString(value)  # type: ignore[no-untyped-call]
