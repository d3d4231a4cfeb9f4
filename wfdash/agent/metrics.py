"""The agent's own measurements and their Prometheus text (format 0.0.4).

A dozen series updated on every request: plain ints and floats, no locks (everything runs
in one event loop), rendered by hand so the agent needs no prometheus_client. Every
labelled series exists from the start at zero, so a rate over the first requests is never
lost to a series that appeared mid-window.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping

PREFIX = "wfdash_agent_"

ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/models", "other")
"""The `route` label: the OpenAI paths the agent knows, everything else as `other`."""
INFERENCE_ROUTES = frozenset(ROUTES[:2])
"""Routes that generate tokens: only they have a TTFT, an end-to-end latency and usage."""

OK, CLIENT_ERROR, SERVER_ERROR, CANCELLED = "ok", "client_error", "server_error", "cancelled"
OUTCOMES = (OK, CLIENT_ERROR, SERVER_ERROR, CANCELLED)

BACKEND_ERRORS = ("connect", "timeout", "disconnect", "invalid")
"""Why a proxied request got no (complete) answer from the backend: it refused the
connection, did not answer in time, dropped the connection, or did not speak HTTP."""

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
"""vLLM's `time_to_first_token_seconds` bounds: the two dialects' quantiles line up."""
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
"""vLLM's `e2e_request_latency_seconds` bounds."""


def route_of(path: str) -> str:
    return path if path in INFERENCE_ROUTES or path == "/v1/models" else "other"


def outcome_of(status: int) -> str:
    if status >= 500:
        return SERVER_ERROR
    return CLIENT_ERROR if status >= 400 else OK


class Histogram:
    """Prometheus histogram state: per-bucket counts, cumulated when rendered."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is (highest bound, +Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """`(upper bound, observations <= bound)` per bucket, `+Inf` last."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class AgentMetrics:
    """Everything the agent counts. The proxy updates the attributes directly."""

    def __init__(self, start_time: float) -> None:
        self.start_time = start_time
        self.requests = {(route, outcome): 0 for route in ROUTES for outcome in OUTCOMES}
        self.in_flight = 0
        self.queued = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.backend_errors = dict.fromkeys(BACKEND_ERRORS, 0)

    def render(
        self,
        build_labels: Mapping[str, str] | None,
        backend_up: bool,
        backend_seconds: float,
        backend_slots: int | None = None,
    ) -> str:
        """The agent's families; `backend_*` describe this scrape of the backend's /metrics
        and the backend's slot count when it is known."""
        out: list[str] = []
        _family(
            out,
            "requests_total",
            "counter",
            "Requests relayed to the backend, by route and outcome (counted when they end).",
            (
                (f'{{route="{route}",outcome="{outcome}"}}', value)
                for (route, outcome), value in self.requests.items()
            ),
        )
        _family(
            out,
            "requests_in_flight",
            "gauge",
            "Requests accepted and not yet fully answered.",
            (("", self.in_flight),),
        )
        _family(
            out,
            "requests_queued",
            "gauge",
            "Requests accepted whose response has not started: no body byte from the "
            "backend yet (waiting in its queue or in prefill).",
            (("", self.queued),),
        )
        _histogram(
            out,
            "time_to_first_token_seconds",
            "Seconds from a completion request's arrival to the first byte of its response "
            "body: the first streamed token, or the whole answer when not streaming.",
            self.ttft,
        )
        _histogram(
            out,
            "e2e_request_latency_seconds",
            "Seconds from a successful completion request's arrival to its last byte.",
            self.e2e,
        )
        _family(
            out,
            "prompt_tokens_total",
            "counter",
            "Prompt tokens, from the `usage` of completion responses.",
            (("", self.prompt_tokens),),
        )
        _family(
            out,
            "completion_tokens_total",
            "counter",
            "Generated tokens, from the `usage` of completion responses.",
            (("", self.completion_tokens),),
        )
        _family(
            out,
            "backend_errors_total",
            "counter",
            "Relayed requests the backend did not answer completely, by reason.",
            ((f'{{reason="{reason}"}}', value) for reason, value in self.backend_errors.items()),
        )
        _family(
            out,
            "backend_metrics_up",
            "gauge",
            "1 if the backend's /metrics, appended below, was read in this scrape; else 0.",
            (("", int(backend_up)),),
        )
        _family(
            out,
            "backend_metrics_seconds",
            "gauge",
            "Seconds this scrape spent reading the backend's /metrics.",
            (("", backend_seconds),),
        )
        if backend_slots is not None:
            _family(
                out,
                "backend_slots",
                "gauge",
                "Requests the backend serves at once (llama-server's total_slots, from its "
                "/props); absent when unknown.",
                (("", backend_slots),),
            )
        if build_labels is not None:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in build_labels.items())
            _family(
                out,
                "build_info",
                "gauge",
                "What this replica's setup built and whether the build cache had it.",
                ((f"{{{labels}}}", 1),),
            )
        _family(
            out,
            "start_time_seconds",
            "gauge",
            "When the agent started, in seconds since the Unix epoch.",
            (("", self.start_time),),
        )
        out.append("")
        return "\n".join(out)


def _family(
    out: list[str], name: str, kind: str, help_: str, series: Iterable[tuple[str, float]]
) -> None:
    full = PREFIX + name
    out.append(f"# HELP {full} {help_}")
    out.append(f"# TYPE {full} {kind}")
    out.extend(f"{full}{labels} {_number(value)}" for labels, value in series)


def _histogram(out: list[str], name: str, help_: str, hist: Histogram) -> None:
    full = PREFIX + name
    out.append(f"# HELP {full} {help_}")
    out.append(f"# TYPE {full} histogram")
    out.extend(
        f'{full}_bucket{{le="{_bound(bound)}"}} {count}' for bound, count in hist.cumulative()
    )
    out.append(f"{full}_sum {_number(hist.sum)}")
    out.append(f"{full}_count {hist.count}")


def _bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
