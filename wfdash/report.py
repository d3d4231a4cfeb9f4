"""Plain-text rendering of a snapshot: ``wfdash --once``, cron, pipes, ``TERM=dumb``."""

from __future__ import annotations

import time

from wfdash.collect.snapshot import ReplicaView, ServiceView, Snapshot
from wfdash.format import DASH as _DASH
from wfdash.format import fmt_num, fmt_seconds


def _replica_line(view: ReplicaView) -> list[str]:
    r = view.replica
    m = view.metrics
    ttft = _DASH
    if m is not None:
        if m.ttft_p95 is not None:
            ttft = fmt_seconds(m.ttft_p95)
        elif m.ttft_mean is not None:
            ttft = "~" + fmt_seconds(m.ttft_mean) + (" est" if m.ttft_is_estimate else "")
    if view.scrape_error is not None:
        scrape = f"{view.scrape_error}: {view.scrape_detail}"
        if view.stale_s is not None:
            scrape += f" (stale {view.stale_s:.0f}s)"
    elif view.scrape_latency_s is not None:
        scrape = f"ok {view.scrape_latency_s * 1000:.0f}ms"
    else:
        scrape = _DASH
    return [
        str(r.replica_id),
        r.layer.value,
        r.infra or _DASH,
        r.instance_type or _DASH,
        "spot" if r.is_spot else "-",
        r.status.value,
        str(r.version) if r.version is not None else _DASH,
        m.dialect.value if m else _DASH,
        fmt_num(m.qps if m else None),
        ttft,
        fmt_num(m.gen_tps if m else None, 1),
        scrape,
    ]


_HEADERS = [
    "ID",
    "LAYER",
    "INFRA",
    "INSTANCE",
    "SPOT",
    "STATUS",
    "VER",
    "DIALECT",
    "QPS",
    "TTFT p95",
    "tok/s",
    "SCRAPE",
]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [_HEADERS, *rows]) for i in range(len(_HEADERS))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [_HEADERS, *rows]
    ]


def _service_block(view: ServiceView) -> list[str]:
    s = view.service
    total = len(s.replicas)
    version = f"v{s.version}" if s.version is not None else "v?"
    qps = fmt_num(view.qps) + ("" if view.qps_complete or view.qps is None else " (partial)")
    lines = [
        f"{s.name} · {s.endpoint or 'no endpoint'} · {version} · {s.ready_count}/{total} ready · "
        f"{s.health.value}: {s.health_reason}",
        f"  policy: {s.policy.text or _DASH} · target replicas: "
        f"{s.target_num_replicas if s.target_num_replicas is not None else _DASH} · "
        f"QPS {qps} · TTFT p50 {fmt_seconds(view.ttft_p50)} p95 {fmt_seconds(view.ttft_p95)} · "
        f"{fmt_num(view.gen_tps, 1)} tok/s",
    ]
    if view.replicas:
        lines.extend("  " + line for line in _table([_replica_line(r) for r in view.replicas]))
    else:
        lines.append("  no replicas")
    return lines


def render_text(snapshot: Snapshot) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snapshot.taken_at))
    lines = [f"wfdash · {snapshot.source} · {stamp}"]
    if not snapshot.status_ok:
        age = snapshot.status_age_s
        shown = f" (showing status from {age:.0f}s ago)" if age is not None else ""
        lines.append(f"status unavailable: {snapshot.status_error}{shown}")
    if not snapshot.services:
        lines.append("no services" if snapshot.status_ok else "")
    for view in snapshot.services:
        lines.append("")
        lines.extend(_service_block(view))
    if snapshot.clusters:
        lines.append("")
        lines.append("standalone clusters:")
        for cluster_view in snapshot.clusters:
            c, m = cluster_view.cluster, cluster_view.metrics
            lines.append(
                f"  {c.name}  {c.status}  {c.cloud or _DASH} {c.region or ''}  "
                f"{c.instance_type or _DASH}  CACHE_VERSION={c.cache_version or _DASH}  "
                f"{fmt_num(m.gen_tps if m else None, 1)} tok/s  {c.last_event or ''}".rstrip()
            )
    if snapshot.events:
        lines.append("")
        lines.append("events:")
        for event in snapshot.events:
            when = time.strftime("%H:%M:%S", time.localtime(event.ts))
            lines.append(f"  {when} {event.kind.value.upper()} {event.service}: {event.message}")
    return "\n".join(line for line in lines) + "\n"
