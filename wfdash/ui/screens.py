"""Secondary screens: the help screen and a replica's detail."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Static

from wfdash.format import DASH, fmt_age
from wfdash.ui.panels import Palette, event_lines

if TYPE_CHECKING:
    from wfdash.collect.events import Event
    from wfdash.collect.snapshot import ReplicaView

KEYS: tuple[tuple[str, str], ...] = (
    ("↑/↓ PgUp/PgDn", "move in the replica table"),
    ("enter", "replica detail: every metric, its events, its log command"),
    ("/", "filter replicas (words match id, layer, infra, instance, status, provider...)"),
    ("escape", "clear the filter / close a screen"),
    (
        "1 … 9, 0",
        "sort by ID, LAYER, INFRA, STATUS, VER, QPS, TTFT, tok/s, BUSY/Q, SCRAPE; again reverses",
    ),
    ("w, ← / →", "all columns, scrolled sideways (a narrow screen shows the most needed)"),
    ("] / [", "next / previous service"),
    ("+ / -", "min replicas up / down: presses add up, the preview opens when you stop"),
    ("s", "scale: min / max replicas and target QPS per replica (sky serve update)"),
    ("b", "switch backend bitnet ⇄ vllm, rolling or blue-green"),
    ("L", "launch a standalone C3D / H3 / RunPod BitNet cluster (sky launch)"),
    ("R", "rebuild the BitNet.cpp cache: a new CACHE_VERSION for the service or a cluster"),
    ("T / D", "terminate the selected replica / take the service down (type its name)"),
    ("a", "this session's actions with their logs; c cancels a running one"),
    ("p", "pause / resume polling (the screen keeps the last data)"),
    ("r", "refresh now (status included), even when paused"),
    ("ctrl+p", "command palette: every action, service switching, themes"),
    ("?", "this help"),
    ("q / ctrl+q", "quit"),
)


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "screens.tcss"  # loaded when the screen is first shown
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for key, what in KEYS:
            table.add_row(key, what)
        legend = Text.from_markup(
            "\n[b]Reading the screen[/b]\n"
            "Layers: [b]base[/b] = fixed-cost Hetzner SSH node pool, "
            "[b]burst[/b] = cloud spot/on-demand.\n"
            "— means unknown (never 0). Dimmed numbers are stale: the last scrape failed.\n"
            "With the wfdash agent in front of a replica (CACHE shows its build: v3 hit),\n"
            "QPS, errors and TTFT are measured by the agent. Without it, llama.cpp has no\n"
            "request counter or TTFT histogram: QPS is —, the sparkline shows tokens/s and\n"
            "~1.2s est is the prefill of a 128-token prompt estimated from its counters.\n"
            "Header: ready/total replicas, health derived from the replicas, hourly cost,\n"
            "and LIVE / PAUSED / STALE (how old the shown status is).\n"
            "\n[b]Changing the service[/b]\n"
            "Every change shows its plan first: the sky command, the YAML diff, the cost\n"
            "change and what restarts. y confirms, n cancels. Every action is written to\n"
            "the event log (who, when, what, outcome). --read-only greys all of them out."
        )
        with VerticalScroll(id="help"):
            yield Static(Text("wfdash keys", style="bold"))
            yield Static(table)
            yield Static(legend)


class ReplicaDetailScreen(Screen[None]):
    """Everything wfdash knows about one replica, updated with each snapshot."""

    CSS_PATH = "screens.tcss"
    BINDINGS = [Binding("escape,q", "app.pop_screen", "back")]

    def __init__(
        self,
        service: str,
        replica_key: str,
        find: Callable[[], ReplicaView | None],
        events: Callable[[int], Sequence[Event]],
        palette: Callable[[], Palette],
        clock: Callable[[], float],
    ) -> None:
        super().__init__()
        self.service = service
        self.replica_key = replica_key
        self._find = find
        self._events = events
        self._palette = palette
        self._clock = clock

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail"):
            yield Static(id="detail-body")
        yield Footer()

    def on_mount(self) -> None:
        self.update_view()

    def update_view(self) -> None:
        view = self._find()
        body = self.query_one("#detail-body", Static)
        if view is None:
            body.update(
                Text(
                    f"Replica {self.replica_key} is gone (removed from the service).", style="bold"
                )
            )
            return
        body.update(
            detail_text(
                self.service,
                view,
                self._events(view.replica.replica_id),
                self._palette(),
                self._clock(),
            )
        )


def detail_text(
    service: str, view: ReplicaView, events: Sequence[Event], palette: Palette, now: float
) -> Text:
    r = view.replica
    text = Text.assemble((f"{service} · replica {r.replica_id} · {r.cluster_name}\n", "bold"))
    rows = [
        ("status", r.status.value + (f" ({r.status_detail})" if r.status_detail else "")),
        (
            "layer / provider",
            f"{r.layer.value} / {r.provider}" + (f" (pool {r.pool})" if r.pool else ""),
        ),
        ("infra", r.infra or DASH),
        ("instance", r.instance_type or DASH),
        ("resources", r.resources or DASH),
        ("spot", "yes" if r.is_spot else "no"),
        ("version", str(r.version) if r.version is not None else DASH),
        ("endpoint", r.endpoint or DASH),
        ("up for", fmt_age(now - r.launched_at) if r.launched_at else DASH),
        ("last scrape", _scrape_text(view)),
        ("build", _build_text(view)),
    ]
    for label, value in rows:
        text.append(f"  {label:<18}", style=palette.dim)
        text.append(f"{value}\n")
    text.append("\nMetrics", style="bold")
    m = view.metrics
    if m is None:
        text.append("  none yet\n", style=palette.dim)
    else:
        window = (
            f" (over {m.window_s:.0f}s)" if m.window_s else " (one scrape so far: no rates yet)"
        )
        text.append(f"{window}\n", style=palette.dim)
        for item in fields(m):
            if item.name == "ttft_window":
                continue
            value = getattr(m, item.name)
            shown = (
                DASH
                if value is None
                else (f"{value:.4g}" if isinstance(value, float) else str(value))
            )
            text.append(f"  {item.name:<19}", style=palette.dim)
            text.append(f"{shown}\n")
        if m.ttft_is_estimate:
            text.append(
                "  ttft_mean is an estimate: the prefill of a 128-token prompt at the measured"
                " speed.\n",
                style=palette.warn,
            )
        if m.busy_is_estimate:
            text.append(
                "  running/waiting are estimates: the backend's /metrics was late (a long"
                " prefill), so they are the agent's in_flight split by the backend's slots.\n",
                style=palette.warn,
            )
    text.append("\nLogs\n", style="bold")
    text.append(f"  sky serve logs {service} {r.replica_id}\n", style=palette.accent)
    text.append(
        f"  sky serve logs {service} --controller   (preemptions, autoscaler decisions)\n",
        style=palette.accent,
    )
    text.append("\nEvents\n", style="bold")
    text.append_text(event_lines(events, palette, limit=50))
    return text


def _build_text(view: ReplicaView) -> str:
    m = view.metrics
    if m is None or m.cache_version is None:
        return f"{DASH} (no wfdash agent on this replica)"
    outcome = (
        "cache unknown"
        if m.cache_hit is None
        else "cache hit"
        if m.cache_hit
        else "cache miss: BitNet.cpp was built"
    )
    took = f", setup build took {fmt_age(m.build_seconds)}" if m.build_seconds else ""
    return f"CACHE_VERSION {m.cache_version}, {outcome}{took}"


def _scrape_text(view: ReplicaView) -> str:
    if view.scrape_error is not None:
        stale = f", data {fmt_age(view.stale_s)} old" if view.stale_s is not None else ""
        return f"{view.scrape_error.value}: {view.scrape_detail}{stale}"
    if view.scrape_latency_s is None:
        return DASH
    text = f"ok in {view.scrape_latency_s * 1000:.0f} ms, {view.scrape_bytes / 1024:.1f} KB"
    if view.metrics is not None and view.metrics.backend_metrics_ok is False:
        text += " (partial: the agent's figures only, the backend's /metrics was late or failed)"
    return text
