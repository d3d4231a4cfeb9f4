"""What one poll cycle hands out: an immutable :class:`Snapshot` and its views.

Kept apart from :mod:`wfdash.collect.poller` so that readers of snapshots (the dashboard,
reports, the control planner) import neither the HTTP client nor the pydantic models. The
dashboard's first paint needs none of it (the first snapshot comes later): building these
dataclasses costs ~8 ms, so the UI names them in annotations only until data arrives.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wfdash.collect.dialects import ReplicaMetrics
    from wfdash.collect.events import Event
    from wfdash.collect.kinds import ScrapeError
    from wfdash.collect.model import Cluster, Replica, Service


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointView:
    """What wfdash knows of one scraped server (a replica or a standalone cluster)."""

    metrics: ReplicaMetrics | None = None  # from the last successful scrape; None if never
    scrape_error: ScrapeError | None = None
    scrape_detail: str = ""
    scrape_latency_s: float | None = None
    scrape_bytes: int = 0
    last_ok: float | None = None  # time of the last successful scrape
    stale_s: float | None = None  # seconds since the last good scrape, when this one failed
    qps_history: tuple[float | None, ...] = ()
    ttft_history: tuple[float | None, ...] = ()  # p95 (or the llama.cpp estimate)
    tps_history: tuple[float | None, ...] = ()  # generated tokens/s


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaView(EndpointView):
    replica: Replica


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterView(EndpointView):
    cluster: Cluster


@dataclass(frozen=True, slots=True)
class ServiceView:
    service: Service
    replicas: tuple[ReplicaView, ...]
    qps: float | None = None  # sum over replicas that report a request rate
    qps_complete: bool = False  # every scraped replica reported one
    ttft_p50: float | None = None  # from merged bucket deltas, not averaged percentiles
    ttft_p95: float | None = None
    gen_tps: float | None = None
    error_share: float | None = None
    history_t: tuple[float, ...] = ()
    qps_history: tuple[float | None, ...] = ()
    ttft_p50_history: tuple[float | None, ...] = ()
    ttft_p95_history: tuple[float | None, ...] = ()
    ready_history: tuple[float | None, ...] = ()
    target_history: tuple[float | None, ...] = ()


@dataclass(frozen=True, slots=True)
class CycleStats:
    duration_s: float
    scrapes: int
    scrape_errors: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: float
    source: str
    services: tuple[ServiceView, ...]
    status_ok: bool  # the last status read succeeded
    clusters: tuple[ClusterView, ...] = ()
    status_error: str | None = None
    status_at: float | None = None  # when the shown status was read
    events: tuple[Event, ...] = ()  # events first recorded in this cycle
    stats: CycleStats = field(default_factory=lambda: CycleStats(0.0, 0, 0, 0))

    @property
    def status_age_s(self) -> float | None:
        return None if self.status_at is None else self.taken_at - self.status_at

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict for ``--once --json`` (secrets were masked at mapping time)."""
        return {
            "taken_at": self.taken_at,
            "source": self.source,
            "status_ok": self.status_ok,
            "status_error": self.status_error,
            "status_age_s": self.status_age_s,
            "services": [_service_json(view) for view in self.services],
            "clusters": [
                {**view.cluster.model_dump(mode="json"), **_endpoint_json(view)}
                for view in self.clusters
            ],
            "events": [e.model_dump(mode="json") for e in self.events],
            "stats": asdict(self.stats),
        }


def _metrics_json(metrics: ReplicaMetrics | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    out = asdict(metrics)
    out.pop("ttft_window")
    return out


def _service_json(view: ServiceView) -> dict[str, Any]:
    service = view.service.model_dump(mode="json", exclude={"yaml_redacted", "replicas"})
    return {
        **service,
        "ready": view.service.ready_count,
        "qps": view.qps,
        "qps_complete": view.qps_complete,
        "ttft_p50": view.ttft_p50,
        "ttft_p95": view.ttft_p95,
        "gen_tps": view.gen_tps,
        "error_share": view.error_share,
        "replicas": [
            {**r.replica.model_dump(mode="json"), **_endpoint_json(r)} for r in view.replicas
        ],
    }


def _endpoint_json(view: EndpointView) -> dict[str, Any]:
    return {
        "metrics": _metrics_json(view.metrics),
        "scrape_error": view.scrape_error,
        "scrape_detail": view.scrape_detail,
        "scrape_latency_s": view.scrape_latency_s,
        "stale_s": view.stale_s,
    }
