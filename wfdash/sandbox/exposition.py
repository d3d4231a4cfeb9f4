"""Render the `/metrics` text of the two replica dialects wfdash scrapes.

`render_llamacpp_metrics` writes what BitNet's llama-server (llama.cpp build b3920) writes;
`render_vllm_metrics` writes what a vLLM v1 replica (0.10-0.12) writes through
prometheus_client. The sandbox's replica emulators serve this text, and the tests and
benchmarks of the scraper feed on it, so it copies the real quirks byte for byte where they
matter to a parser: llama.cpp's C++ stream formatting (`1.23457e+06`, `-nan`), its
`n_busy_slots_per_decode` typed `counter` without `_total`; prometheus_client's Go-style
floats (`1.234567e+06`, `2560.0`), sorted labels, and the `*_created` gauge family it
writes after every counter, histogram and summary.

Both renderers run for every emulated replica every second or two, so they only format
numbers and join strings; everything that does not depend on the values is cached.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
"""vLLM v1's `FinishReason`s, in the order it registers `request_success` series."""

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
"""Upper bounds of `vllm:time_to_first_token_seconds` (the `+Inf` bucket is implicit)."""

TOKEN_LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
    0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
"""Bounds of the per-token histograms (inter-token latency, time per output token)."""

REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
"""Bounds of the per-request phase histograms (e2e, queue, inference, prefill, decode)."""

PREFILL_TOKEN_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PARAMS_N_BUCKETS = (1, 2, 5, 10, 20)
HTTP_DURATION_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0,
    2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 7.5, 10.0, 30.0, 60.0,
)  # fmt: skip
"""prometheus_fastapi_instrumentator's `http_request_duration_highr_seconds` bounds."""

HTTP_COARSE_BUCKETS = (0.1, 0.5, 1.0)
"""Its per-handler `http_request_duration_seconds` bounds: a subset of the fine ones."""

DEFAULT_MAX_MODEL_LEN = 4096
DEFAULT_VLLM_MODEL = "microsoft/bitnet-b1.58-2B-4T"


def token_count_buckets(max_model_len: int) -> tuple[int, ...]:
    """vLLM's 1-2-5 bounds for token-count histograms: 1, 2, 5, 10, ... up to the context."""
    bounds: list[int] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            if mantissa * scale > max_model_len:
                return tuple(bounds)
            bounds.append(mantissa * scale)
        scale *= 10


@dataclass(slots=True)
class Histogram:
    """A Prometheus histogram's cumulative state.

    `counts[i]` counts the observations `<= bounds[i]`; the `+Inf` bucket is `count`.
    """

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        counts = self.counts
        for i in range(bisect_left(self.bounds, value), len(counts)):
            counts[i] += 1
        self.sum += value
        self.count += 1


# --------------------------------------------------------------------------- llama.cpp


@dataclass(slots=True)
class LlamaCppCounters:
    """What llama-server b3920 reports on `/metrics`: 12 families, one unlabelled sample each.

    `n_busy_slots_per_decode` is `None` until the first decode: llama-server divides 0 by 0
    and prints `-nan`.
    """

    prompt_tokens_total: int = 0
    prompt_seconds_total: float = 0.0
    tokens_predicted_total: int = 0
    tokens_predicted_seconds_total: float = 0.0
    n_decode_total: int = 0
    n_busy_slots_per_decode: float | None = None
    prompt_tokens_seconds: float = 0.0
    predicted_tokens_seconds: float = 0.0
    kv_cache_usage_ratio: float = 0.0
    kv_cache_tokens: int = 0
    requests_processing: int = 0
    requests_deferred: int = 0


# (name, type, help) in llama-server's order: its ordered JSON lists counters, then gauges.
# The help texts are b3920's, grammar included ("Number of request processing.", fixed
# upstream in January 2025).
_LLAMACPP_FAMILIES = (
    ("prompt_tokens_total", "counter", "Number of prompt tokens processed."),
    ("prompt_seconds_total", "counter", "Prompt process time"),
    ("tokens_predicted_total", "counter", "Number of generation tokens processed."),
    ("tokens_predicted_seconds_total", "counter", "Predict process time"),
    ("n_decode_total", "counter", "Total number of llama_decode() calls"),
    (
        "n_busy_slots_per_decode",
        "counter",
        "Average number of busy slots per llama_decode() call",
    ),
    ("prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s."),
    ("predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s."),
    ("kv_cache_usage_ratio", "gauge", "KV-cache usage. 1 means 100 percent usage."),
    ("kv_cache_tokens", "gauge", "KV-cache tokens."),
    ("requests_processing", "gauge", "Number of request processing."),
    ("requests_deferred", "gauge", "Number of request deferred."),
)
_LLAMACPP_PREFIXES = tuple(
    f"# HELP llamacpp:{name} {help_}\n# TYPE llamacpp:{name} {type_}\nllamacpp:{name} "
    for name, type_, help_ in _LLAMACPP_FAMILIES
)


def c_double(value: float) -> str:
    """Format like C++'s `ostream << double` (printf `%g`): 6 significant digits.

    glibc prints a NaN with its sign bit set as `-nan`, which is what 0.0/0.0 gives on x86.
    """
    if math.isnan(value):
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    return f"{value:g}"


def render_llamacpp_metrics(m: LlamaCppCounters) -> str:
    """The exact body llama-server b3920 answers on `/metrics` (run with `--metrics`)."""
    busy = m.n_busy_slots_per_decode
    values = (
        m.prompt_tokens_total,
        m.prompt_seconds_total,
        m.tokens_predicted_total,
        m.tokens_predicted_seconds_total,
        m.n_decode_total,
        -math.nan if busy is None else busy,
        m.prompt_tokens_seconds,
        m.predicted_tokens_seconds,
        m.kv_cache_usage_ratio,
        m.kv_cache_tokens,
        m.requests_processing,
        m.requests_deferred,
    )
    return "".join(
        f"{prefix}{c_double(value)}\n"
        for prefix, value in zip(_LLAMACPP_PREFIXES, values, strict=True)
    )


# --------------------------------------------------------------------------- vLLM


def _latency() -> Histogram:
    return Histogram(REQUEST_LATENCY_BUCKETS)


def _token_latency() -> Histogram:
    return Histogram(TOKEN_LATENCY_BUCKETS)


def _token_counts() -> Histogram:
    return Histogram(token_count_buckets(DEFAULT_MAX_MODEL_LEN))


@dataclass(slots=True)
class VllmCounters:
    """Cumulative state behind one vLLM replica's `/metrics` (one engine, index 0).

    `created` is the Unix time the engine registered its metrics (every `*_created`
    series). The token-count histograms default to a 4096-token context; pass histograms
    built with `token_count_buckets(max_model_len)` for another. `http_duration` holds the
    latency of the HTTP requests the replica served, all on `POST /v1/chat/completions`.
    """

    created: float = 1.7e9
    finished: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISH_REASONS, 0))
    num_requests_running: int = 0
    num_requests_waiting: int = 0
    kv_cache_usage: float = 0.0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    num_preemptions: int = 0
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    inter_token_latency: Histogram = field(default_factory=_token_latency)
    request_time_per_output_token: Histogram = field(default_factory=_token_latency)
    e2e_latency: Histogram = field(default_factory=_latency)
    queue_time: Histogram = field(default_factory=_latency)
    inference_time: Histogram = field(default_factory=_latency)
    prefill_time: Histogram = field(default_factory=_latency)
    decode_time: Histogram = field(default_factory=_latency)
    time_per_prefill_token: Histogram = field(
        default_factory=lambda: Histogram(PREFILL_TOKEN_BUCKETS)
    )
    prompt_tokens_per_request: Histogram = field(default_factory=_token_counts)
    generation_tokens_per_request: Histogram = field(default_factory=_token_counts)
    max_tokens_param: Histogram = field(default_factory=_token_counts)
    max_num_generation_tokens: Histogram = field(default_factory=_token_counts)
    params_n: Histogram = field(default_factory=lambda: Histogram(PARAMS_N_BUCKETS))
    iteration_tokens: Histogram = field(default_factory=lambda: Histogram(ITERATION_TOKENS_BUCKETS))
    http_duration: Histogram = field(default_factory=lambda: Histogram(HTTP_DURATION_BUCKETS))
    http_request_bytes: float = 0.0
    http_response_bytes: float = 0.0
    cpu_seconds: float = 0.0
    resident_memory_bytes: float = 2.1e9


_NON_FINITE = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def go_float(value: float) -> str:
    """Format a number like prometheus_client (after Go): `3.0`, `1.234567e+06`, `+Inf`."""
    if type(value) is int and 0 <= value < 1_000_000:
        return f"{value}.0"  # the usual bucket count, 3x faster than the general case
    text = repr(float(value))
    if text[-1] in "fn":
        return _NON_FINITE[text]
    dot = text.find(".")
    if dot > 6 and value > 0:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


@dataclass(frozen=True, slots=True)
class _Labels:
    """One series' label text, split around where prometheus_client's sort puts `le`."""

    braced: str  # `{a="1",z="2"}`, or "" without labels
    before_le: str  # `a="1",`
    after_le: str  # `,z="2"`


def _labels(before_le: tuple[str, ...], after_le: tuple[str, ...] = ()) -> _Labels:
    both = ",".join(before_le + after_le)
    return _Labels(
        braced=f"{{{both}}}" if both else "",
        before_le="".join(f"{pair}," for pair in before_le),
        after_le="".join(f",{pair}" for pair in after_le),
    )


def _escape(label_value: str) -> str:
    return label_value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _header(out: list[str], name: str, type_: str, help_: str) -> None:
    out.append(f"# HELP {name} {help_}\n# TYPE {name} {type_}")


@lru_cache(maxsize=1024)
def _bucket_prefixes(name: str, labels: _Labels, bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The text before the value of every bucket line, the `+Inf` one last."""
    return tuple(
        f'{name}_bucket{{{labels.before_le}le="{go_float(bound)}"{labels.after_le}}} '
        for bound in (*bounds, math.inf)
    )


@dataclass(frozen=True, slots=True)
class _Writer:
    """Appends families to `out`, a line per item, in prometheus_client's text layout.

    Every counter, histogram and summary is followed by its `name_created` gauge family,
    whose value is `created` (already formatted) for every series.
    """

    out: list[str]
    created: str

    def gauge(self, name: str, help_: str, labels: _Labels, value: float) -> None:
        _header(self.out, name, "gauge", help_)
        self.out.append(f"{name}{labels.braced} {go_float(value)}")

    def counter(self, name: str, help_: str, series: Iterable[tuple[str, float]]) -> None:
        """Counter `name` (given without `_total`): braced label text and value per series."""
        series = tuple(series)
        _header(self.out, f"{name}_total", "counter", help_)
        self.out.extend(f"{name}_total{labels} {go_float(value)}" for labels, value in series)
        self._created(name, help_, [labels for labels, _ in series])

    def histogram(self, name: str, help_: str, labels: _Labels, hist: Histogram) -> None:
        _header(self.out, name, "histogram", help_)
        prefixes = _bucket_prefixes(name, labels, hist.bounds)
        self.out.extend(map(operator.add, prefixes, map(go_float, (*hist.counts, hist.count))))
        self._count_and_sum(name, labels, hist.count, hist.sum)
        self._created(name, help_, [labels.braced])

    def summary(self, name: str, help_: str, labels: _Labels, count: int, total: float) -> None:
        _header(self.out, name, "summary", help_)
        self._count_and_sum(name, labels, count, total)
        self._created(name, help_, [labels.braced])

    def _count_and_sum(self, name: str, labels: _Labels, count: int, total: float) -> None:
        self.out.append(f"{name}_count{labels.braced} {go_float(count)}")
        self.out.append(f"{name}_sum{labels.braced} {go_float(total)}")

    def _created(self, name: str, help_: str, braced: list[str]) -> None:
        _header(self.out, f"{name}_created", "gauge", help_)
        self.out.extend(f"{name}_created{labels} {self.created}" for labels in braced)


# (name, help, VllmCounters attribute), in the order vLLM registers them.
_Family = tuple[str, str, str]

_VLLM_GAUGES: tuple[_Family, ...] = (
    ("vllm:num_requests_running", "Number of requests in model execution batches.",
     "num_requests_running"),
    ("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
     "num_requests_waiting"),
)  # fmt: skip
_KV_CACHE_GAUGE: _Family = (
    "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", "kv_cache_usage"
)  # fmt: skip
_LEGACY_KV_CACHE_GAUGE: _Family = (
    "vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.",
    "kv_cache_usage",
)  # fmt: skip

_VLLM_COUNTERS: tuple[_Family, ...] = (
    ("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
     "prefix_cache_queries"),
    ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
     "prefix_cache_hits"),
    ("vllm:num_preemptions", "Cumulative number of preemption from the engine.",
     "num_preemptions"),
    ("vllm:prompt_tokens", "Number of prefill tokens processed.", "prompt_tokens"),
    ("vllm:generation_tokens", "Number of generation tokens processed.", "generation_tokens"),
)  # fmt: skip

_VLLM_COUNT_HISTOGRAMS: tuple[_Family, ...] = (
    ("vllm:request_prompt_tokens", "Number of prefill tokens processed.",
     "prompt_tokens_per_request"),
    ("vllm:request_generation_tokens", "Number of generation tokens processed.",
     "generation_tokens_per_request"),
    ("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.",
     "iteration_tokens"),
    ("vllm:request_max_num_generation_tokens",
     "Histogram of maximum number of requested generation tokens.",
     "max_num_generation_tokens"),
    ("vllm:request_params_n", "Histogram of the n request parameter.", "params_n"),
    ("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.",
     "max_tokens_param"),
    ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
     "ttft"),
)  # fmt: skip
_TOKEN_LATENCY_HISTOGRAMS: tuple[_Family, ...] = (
    ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
     "inter_token_latency"),
    ("vllm:request_time_per_output_token_seconds",
     "Histogram of time_per_output_token_seconds per request.",
     "request_time_per_output_token"),
)  # fmt: skip
_LEGACY_TOKEN_LATENCY_HISTOGRAMS: tuple[_Family, ...] = (
    ("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.",
     "inter_token_latency"),
)  # fmt: skip
_VLLM_REQUEST_HISTOGRAMS: tuple[_Family, ...] = (
    ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
     "e2e_latency"),
    ("vllm:request_queue_time_seconds",
     "Histogram of time spent in WAITING phase for request.", "queue_time"),
    ("vllm:request_inference_time_seconds",
     "Histogram of time spent in RUNNING phase for request.", "inference_time"),
    ("vllm:request_prefill_time_seconds",
     "Histogram of time spent in PREFILL phase for request.", "prefill_time"),
    ("vllm:request_decode_time_seconds",
     "Histogram of time spent in DECODE phase for request.", "decode_time"),
    ("vllm:time_per_prefill_token_request_seconds",
     "Time spent per token during prefill  phase in seconds", "time_per_prefill_token"),
)  # fmt: skip

_CACHE_CONFIG_INFO = (
    "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
    "# TYPE vllm:cache_config_info gauge\n"
    'vllm:cache_config_info{block_size="16",cache_dtype="auto",calculate_kv_scales="False",'
    'cpu_offload_gb="0",enable_prefix_caching="True",engine="0",'
    'gpu_memory_utilization="0.9",is_attention_free="False",num_cpu_blocks="None",'
    'num_gpu_blocks="7281",num_gpu_blocks_override="None",'
    'prefix_caching_hash_algo="sha256",sliding_window="None",swap_space="4",'
    'swap_space_bytes="4294967296"} 1.0'
)


def render_vllm_metrics(
    m: VllmCounters,
    model_name: str = DEFAULT_VLLM_MODEL,
    with_process_metrics: bool = True,
    legacy_names: bool = False,
) -> str:
    """A vLLM v1 replica's `/metrics` body: 0.11 names, or 0.10's with `legacy_names`.

    0.10 calls the KV-cache gauge `vllm:gpu_cache_usage_perc` and has the per-token
    `vllm:time_per_output_token_seconds` where 0.11 has `vllm:inter_token_latency_seconds`
    (plus the per-request `vllm:request_time_per_output_token_seconds`).
    """
    w = _Writer([], go_float(m.created))
    if with_process_metrics:
        _python_and_process(w.out, m)
    _vllm_engine(w, m, _engine_labels(model_name), legacy_names)
    _http(w, m)
    return "\n".join(w.out) + "\n"


@lru_cache(maxsize=256)
def _engine_labels(model_name: str) -> _Labels:
    return _labels(('engine="0"',), (f'model_name="{_escape(model_name)}"',))


@lru_cache(maxsize=1024)
def _finished_labels(labels: _Labels, reason: str) -> str:
    return f'{{{labels.before_le}finished_reason="{reason}"{labels.after_le}}}'


def _vllm_engine(w: _Writer, m: VllmCounters, labels: _Labels, legacy_names: bool) -> None:
    kv_cache = _LEGACY_KV_CACHE_GAUGE if legacy_names else _KV_CACHE_GAUGE
    for name, help_, attr in (*_VLLM_GAUGES, kv_cache):
        w.gauge(name, help_, labels, getattr(m, attr))
    for name, help_, attr in _VLLM_COUNTERS:
        w.counter(name, help_, ((labels.braced, getattr(m, attr)),))
    w.counter(
        "vllm:request_success",
        "Count of successfully processed requests.",
        (
            (_finished_labels(labels, reason), m.finished.get(reason, 0))
            for reason in FINISH_REASONS
        ),
    )
    token_latency = _LEGACY_TOKEN_LATENCY_HISTOGRAMS if legacy_names else _TOKEN_LATENCY_HISTOGRAMS
    for name, help_, attr in (*_VLLM_COUNT_HISTOGRAMS, *token_latency, *_VLLM_REQUEST_HISTOGRAMS):
        w.histogram(name, help_, labels, getattr(m, attr))
    w.out.append(_CACHE_CONFIG_INFO)


# The garbage collector's counters of a long-running vLLM API server: nobody reads them,
# they give the payload its real shape.
_PYTHON_FAMILIES = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 23958.0
python_gc_objects_collected_total{generation="1"} 8129.0
python_gc_objects_collected_total{generation="2"} 3105.0
# HELP python_gc_objects_uncollectable_total Uncollectable objects found during GC
# TYPE python_gc_objects_uncollectable_total counter
python_gc_objects_uncollectable_total{generation="0"} 0.0
python_gc_objects_uncollectable_total{generation="1"} 0.0
python_gc_objects_uncollectable_total{generation="2"} 0.0
# HELP python_gc_collections_total Number of times this generation was collected
# TYPE python_gc_collections_total counter
python_gc_collections_total{generation="0"} 3312.0
python_gc_collections_total{generation="1"} 301.0
python_gc_collections_total{generation="2"} 21.0
# HELP python_info Python platform information
# TYPE python_info gauge
python_info{implementation="CPython",major="3",minor="12",patchlevel="11",version="3.12.11"} 1.0\
"""


def _python_and_process(out: list[str], m: VllmCounters) -> None:
    out.append(_PYTHON_FAMILIES)
    for name, type_, help_, value in (
        ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
         m.resident_memory_bytes * 6.5),
        ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
         m.resident_memory_bytes),
        ("process_start_time_seconds", "gauge",
         "Start time of the process since unix epoch in seconds.", m.created),
        ("process_cpu_seconds_total", "counter",
         "Total user and system CPU time spent in seconds.", m.cpu_seconds),
        ("process_open_fds", "gauge", "Number of open file descriptors.", 62),
        ("process_max_fds", "gauge", "Maximum number of open file descriptors.", 1048576),
    ):  # fmt: skip
        _header(out, name, type_, help_)
        out.append(f"{name} {go_float(value)}")


_NO_LABELS = _labels(())
_HANDLER = _labels(('handler="/v1/chat/completions"',))
_HANDLER_POST = _labels(('handler="/v1/chat/completions"',), ('method="POST"',))
_HANDLER_POST_2XX = '{handler="/v1/chat/completions",method="POST",status="2xx"}'
_SIZE_HELP = "Only value of header is respected. Otherwise ignored. No percentile calculated. "


def _http(w: _Writer, m: VllmCounters) -> None:
    """prometheus_fastapi_instrumentator's default families, for the one route served."""
    hist = m.http_duration
    w.counter(
        "http_requests",
        "Total number of requests by method, status and handler.",
        ((_HANDLER_POST_2XX, hist.count),),
    )
    w.summary(
        "http_request_size_bytes",
        f"Content length of incoming requests by handler. {_SIZE_HELP}",
        _HANDLER,
        hist.count,
        m.http_request_bytes,
    )
    w.summary(
        "http_response_size_bytes",
        f"Content length of outgoing responses by handler. {_SIZE_HELP}",
        _HANDLER,
        hist.count,
        m.http_response_bytes,
    )
    w.histogram(
        "http_request_duration_highr_seconds",
        "Latency with many buckets but no API specific labels. "
        "Made for more accurate percentile calculations. ",
        _NO_LABELS,
        hist,
    )
    coarse = Histogram(
        HTTP_COARSE_BUCKETS,
        [hist.counts[hist.bounds.index(bound)] for bound in HTTP_COARSE_BUCKETS],
        hist.sum,
        hist.count,
    )
    w.histogram(
        "http_request_duration_seconds",
        "Latency with only few buckets by handler. "
        "Made to be only used if aggregation by handler is important. ",
        _HANDLER_POST,
        coarse,
    )
