"""The dashboard's text panels: header, spillover, clusters, events (pure render functions).

Each takes a snapshot's parts and returns rich Text, so they are unit-testable and the
widgets stay thin.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from rich.text import Text

from wfdash.collect.kinds import EventKind, Health, Layer, ReplicaStatus
from wfdash.format import DASH, fmt_age, fmt_money, fmt_num, fmt_seconds, fmt_share

if TYPE_CHECKING:
    from wfdash.collect.events import Event
    from wfdash.collect.snapshot import ClusterView, ServiceView, Snapshot
    from wfdash.cost import FleetCost


class Palette(NamedTuple):
    """Theme colours for the panels (from the app's CSS variables).

    A NamedTuple rather than a frozen dataclass, like the UI's other small records built
    at import: a dataclass costs ~1 ms there (it compiles its methods), before the first
    paint.
    """

    ok: str
    warn: str
    bad: str
    dim: str
    accent: str
    base: str
    burst: str


def health_style(health: Health, palette: Palette) -> str:
    if health is Health.HEALTHY:
        return palette.ok
    if health in (Health.DEGRADED, Health.STARTING, Health.SHUTTING_DOWN):
        return palette.warn
    return palette.bad


def refresh_state(
    snapshot: Snapshot | None, now: float, paused: bool, interval: float
) -> tuple[str, str]:
    """('LIVE' | 'PAUSED' | 'STALE 12s' | 'CONNECTING', why) for the header's corner."""
    if snapshot is None:
        return "CONNECTING", "waiting for the first poll"
    if paused:
        return "PAUSED", "p resumes"
    if not snapshot.status_ok:
        age = snapshot.status_age_s
        return (
            f"STALE {fmt_age(age)}" if age is not None else "NO STATUS",
            snapshot.status_error or "",
        )
    since = now - snapshot.taken_at
    if since > max(3 * interval, 10):
        return f"STALE {fmt_age(since)}", "polls are not arriving"
    return "LIVE", f"every {interval:g}s"


def header(
    view: ServiceView | None,
    snapshot: Snapshot | None,
    cost: FleetCost | None,
    *,
    now: float,
    paused: bool,
    interval: float,
    read_only: bool,
    palette: Palette,
    service_index: tuple[int, int] = (0, 0),
    source: str | None = None,
) -> Text:
    """``source``: what is being read, before the first snapshot says so."""
    state, _ = refresh_state(snapshot, now, paused, interval)
    text = Text.assemble(("wfdash", f"bold {palette.accent}"))
    if view is None:
        shown = snapshot.source if snapshot else (source or "starting")
        text.append(f" · {shown}", style=palette.dim)
    else:
        s = view.service
        index, count = service_index
        text.append(f" · {s.name}", style="bold")
        if count > 1:
            text.append(f" ({index + 1}/{count})", style=palette.dim)
        versions = ",".join(f"v{v}" for v in s.active_versions) or (
            f"v{s.version}" if s.version else "v?"
        )
        if s.version is not None and s.active_versions and s.active_versions != (s.version,):
            versions += f"→v{s.version}"
        text.append(f" · {versions}")
        total = sum(1 for r in s.replicas if r.status is not ReplicaStatus.PREEMPTED)
        text.append(f" · {s.ready_count}/{total} ready")
        text.append(f" · {s.health.value}", style=f"bold {health_style(s.health, palette)}")
        if cost is not None:
            text.append(f" · {fmt_money(cost.total_per_hour)}")
    style = palette.ok if state == "LIVE" else palette.warn
    text.append(" ")
    text.append(f"[{state}]", style=f"bold {style}")
    if read_only:
        text.append(" [READ-ONLY]", style=f"bold {palette.warn}")
    if view is not None:
        # Last: the first thing to be cut on a narrow terminal.
        text.append(f" · {view.service.endpoint or 'no endpoint'}", style=palette.dim)
    return text


def _bar(used: int, total: int, *, ascii: bool) -> str:
    full, empty = ("#", ".") if ascii else ("■", "□")
    return full * used + empty * max(0, total - used)


def spillover(
    view: ServiceView, cost: FleetCost, *, pool_hosts: int | None, ascii: bool, palette: Palette
) -> Text:
    """Two lines: the fixed-cost base layer and the pay-per-use burst layer."""
    base_used = cost.base_hosts_used
    total = pool_hosts if pool_hosts is not None else cost.base_hosts_total
    pools = sorted({r.pool for r in view.service.replicas if r.pool})
    text = Text.assemble(("Base  ", f"bold {palette.base}"))
    text.append(f"{', '.join(pools) or 'SSH pool'} ")
    if total:
        text.append(_bar(base_used, total, ascii=ascii), style=palette.base)
        text.append(f" {base_used}/{total} hosts")
    else:
        text.append(f"{base_used} host{'' if base_used == 1 else 's'}")
    text.append(f"   fixed {fmt_money(cost.base_per_hour)}", style=palette.dim)
    text.append("\n")
    text.append("Burst ", style=f"bold {palette.burst}")
    burst = [line for line in cost.lines if line.layer is Layer.BURST and line.replicas]
    if not burst:
        text.append("none running", style=palette.dim)
    for line in burst:
        kind = "spot" if line.spot else "on-demand"
        text.append(_bar(line.replicas, line.replicas, ascii=ascii), style=palette.burst)
        times = "x" if ascii else "×"
        text.append(f" {line.provider}:{line.region or '?'} {kind}{times}{line.replicas} ")
    text.append(f"  {fmt_money(cost.burst_per_hour)}", style=palette.dim)
    if cost.savings_share is not None:
        text.append(
            f"   saving {fmt_share(cost.savings_share)} vs all on-demand "
            f"({fmt_money(cost.baseline_per_hour)})",
            style=palette.ok,
        )
    return text


def service_summary(view: ServiceView) -> Text:
    """The line above the plots: the service's aggregate numbers with units."""
    qps = fmt_num(view.qps) + (
        " (partial)" if view.qps is not None and not view.qps_complete else ""
    )
    errors = fmt_share(view.error_share)
    target = view.service.target_num_replicas
    return Text(
        f"QPS {qps}   TTFT p50 {fmt_seconds(view.ttft_p50)}  p95 {fmt_seconds(view.ttft_p95)}   "
        f"{fmt_num(view.gen_tps, 1)} tok/s   errors {errors}   "
        f"target {target if target is not None else DASH} replicas   "
        f"policy: {view.service.policy.text or DASH}"
    )


def cluster_line(view: ClusterView, now: float, palette: Palette) -> Text:
    c, m = view.cluster, view.metrics
    style = palette.ok if c.status == "UP" and view.scrape_error is None else palette.warn
    text = Text.assemble((f"{c.name} ", "bold"))
    text.append(c.status, style=style)
    text.append(f" {c.cloud or DASH} {c.instance_type or DASH}")
    text.append(f" {fmt_num(m.gen_tps if m else None, 1)} tok/s")
    if c.launched_at:
        text.append(f" up {fmt_age(now - c.launched_at)}", style=palette.dim)
    text.append(f"\n  CACHE_VERSION {c.cache_version or DASH}", style=palette.dim)
    if c.last_event:
        text.append(f" · {c.last_event}", style=palette.dim)
    return text


_EVENT_STYLE = {
    EventKind.PREEMPTED: "bad",
    EventKind.ACTION: "accent",
    EventKind.REPLICA_REMOVED: "warn",
    EventKind.SERVICE_REMOVED: "warn",
}


def event_lines(events: Sequence[Event], palette: Palette, limit: int) -> Text:
    text = Text()
    if not events:
        text.append("no events recorded yet", style=palette.dim)
    for i, event in enumerate(events[:limit]):
        if i:
            text.append("\n")
        when = time.strftime("%m-%d %H:%M:%S", time.localtime(event.ts))
        text.append(f"{when} ", style=palette.dim)
        style = (
            getattr(palette, _EVENT_STYLE.get(event.kind, "dim"))
            if event.kind in _EVENT_STYLE
            else ""
        )
        # The message starts with what happened (PREEMPTED #8 …): colour it by kind.
        text.append(event.message, style=style)
    return text
