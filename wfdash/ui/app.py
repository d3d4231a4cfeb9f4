"""The dashboard: a Textual app that renders the poller's snapshots.

Data flows one way: the poller (its own thread) delivers immutable snapshots; the app
keeps the latest and re-renders. Widgets never collect anything themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.css.scalar import Unit
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from wfdash.collect.store import EventStore
from wfdash.ui import panels
from wfdash.ui.flows import Control, ControlFlows
from wfdash.ui.lines_view import LinesView
from wfdash.ui.plot import PlotSeries, render_plot
from wfdash.ui.poller_thread import PollerThread
from wfdash.ui.replica_table import COLUMNS, ReplicaTable, Styles, arrange
from wfdash.ui.themes import load_themes, rich_color, variable_defaults

if TYPE_CHECKING:
    from wfdash.collect.events import Event
    from wfdash.collect.poller import Poller
    from wfdash.collect.snapshot import ReplicaView, ServiceView, Snapshot
    from wfdash.cost import FleetCost
    from wfdash.ui.control import ActionsScreen
    from wfdash.ui.screens import ReplicaDetailScreen

T = TypeVar("T")

# Digits sort by these columns (same digit again reverses).
SORT_DIGITS = {
    "1": "id", "2": "layer", "3": "infra", "4": "status", "5": "version",
    "6": "qps", "7": "ttft", "8": "tps", "9": "queue", "0": "scrape",
}  # fmt: skip
# Actions that change the service; --read-only refuses every one of them here, in one place.
MUTATING_ACTIONS = frozenset(
    {"scale_step", "scale", "backend", "launch", "rebuild", "terminate", "down"}
)
COMPACT_HEIGHT = 34
# The replica table never gets fewer lines than this (its border, header and three rows).
MIN_TABLE_HEIGHT = 5
# Plots show a trend over the whole history window: redrawing them on every 2 s poll cost
# more CPU than the rest of a refresh, for a shift of one braille dot. They are redrawn at
# most every PLOT_REFRESH_S, and at most once per column of new data: a plot spanning S
# seconds on W columns shows S/W seconds per column (10 min on 78 columns: 7.7 s), and a
# redraw before that much new data has arrived moves the lines by less than a column. So
# a plot lags its data by at most max(PLOT_REFRESH_S, S/W); the numbers beside the plots
# and in the table follow every poll.
PLOT_REFRESH_S = 5.0
MAIN_SCREEN_ACTIONS = frozenset(
    {
        "filter",
        "clear_filter",
        "toggle_pause",
        "refresh_now",
        "detail",
        "next_service",
        "previous_service",
        "sort",
        "help",
        "actions",
        *MUTATING_ACTIONS,
    }
)


class PlotView(LinesView):
    """A plot, redrawn at its own size whenever the layout changes that size.

    The app's Resize arrives before the new layout: plotting then would draw at the old
    size (and stay so while paused).
    """

    def on_resize(self, event: Resize) -> None:
        app = self.app
        if isinstance(app, WfdashApp):
            app.render_plots()


class WfdashApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "wfdash"
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help"),
        Binding("slash", "filter", "filter"),
        Binding("escape", "clear_filter", "clear", show=False),
        Binding("p", "toggle_pause", "pause"),
        Binding("r", "refresh_now", "refresh"),
        Binding("enter", "detail", "detail", show=False),
        Binding("right_square_bracket", "next_service", "next svc"),
        Binding("left_square_bracket", "previous_service", "prev svc", show=False),
        Binding("plus", "scale_step(1)", "+min"),
        Binding("minus", "scale_step(-1)", "-min"),
        Binding("s", "scale", "scale"),
        Binding("b", "backend", "backend"),
        Binding("L", "launch", "launch"),
        Binding("R", "rebuild", "rebuild"),
        Binding("T", "terminate", "terminate", show=False),
        Binding("D", "down", "down", show=False),
        Binding("a", "actions", "actions"),
        *(
            Binding(digit, f"sort('{key}')", f"sort {key}", show=False)
            for digit, key in SORT_DIGITS.items()
        ),
    ]

    def __init__(
        self,
        *,
        make_poller: Callable[[], Poller] | None = None,
        store: EventStore | None = None,
        theme: str = "wfdash-dark",
        ascii: bool = False,
        read_only: bool = False,
        interval: float = 2.0,
        pool_hosts: int | None = None,
        clock: Callable[[], float] = time.time,
        control: Control | None = None,
        on_first_paint: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._on_first_paint = on_first_paint
        self._themes = load_themes()
        for candidate in self._themes.values():
            self.register_theme(candidate)
        self.theme = theme
        self.animation_level = "none"
        self.ascii = ascii
        self.read_only = read_only
        self.interval = interval
        self.pool_hosts = pool_hosts
        self.clock = clock
        self.store = store
        self.snapshot: Snapshot | None = None
        self.service_name: str | None = None
        self.filter_text = ""
        self.paused = False
        self._events: list[Event] = []
        self._cost: FleetCost | None = None
        self._ui_loop: asyncio.AbstractEventLoop | None = None
        self._css_theme: str | None = None
        # What the plots were last drawn for (service, theme, glyphs, size) and when.
        self._plots_drawn: tuple[object, ...] = ()
        self._plots_at = 0.0
        self._css_variables: dict[str, str] = {}
        self._poller_thread = (
            PollerThread(make_poller, self._deliver, self._connecting) if make_poller else None
        )
        self.source: str | None = None  # what the poller reads, once it is known
        self.flows = ControlFlows(self, control or Control())

    @property
    def _main(self) -> Screen[object]:
        """The dashboard screen, also while help or a replica's detail is on top of it."""
        return self.screen_stack[0]

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return variable_defaults()

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        yield Static(id="spillover")
        yield ReplicaTable(id="replicas")
        yield Static(id="summary")
        yield Static(id="actions")
        with Horizontal(id="plots"):
            yield PlotView(id="qps-plot", classes="plot")
            yield PlotView(id="ttft-plot", classes="plot")
        with Horizontal(id="bottom"):
            with Vertical(id="clusters-box"):
                yield Static("Standalone clusters", classes="title")
                yield Static(id="clusters")
            with Vertical(id="events-box"):
                yield Static("Events", classes="title")
                yield Static(id="events")
        yield Footer()

    def on_mount(self) -> None:
        self._ui_loop = asyncio.get_running_loop()
        self._main.query_one(ReplicaTable).focus()
        self._apply_compact(self.size.height, self.size.width)
        self.render_all()
        self.call_after_refresh(self._first_painted)
        # The SSH session dropped: exit instead of polling on for nobody.
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.exit, 0)
        self.set_interval(1.0, self._header_timer)

    def _first_painted(self) -> None:
        if self._on_first_paint is not None:
            self._on_first_paint()
        if self._poller_thread is not None:
            # After the first paint: the poller thread imports sky and makes the first call.
            self._poller_thread.start()

    async def on_unmount(self) -> None:
        if self._poller_thread is not None:
            self._poller_thread.stop()

    def on_resize(self, event: Resize) -> None:
        self._apply_compact(event.size.height, event.size.width)
        self.render_plots()
        self.call_after_refresh(self._fit_table)

    def _apply_compact(self, height: int, width: int) -> None:
        compact = height < COMPACT_HEIGHT or width < 100
        self._main.set_class(compact, "compact")

    def _fit_table(self) -> None:
        """Cap the replica table at the lines the other panels leave it.

        The table is as tall as its rows, but a big fleet must not push the summary, plots
        and events off the screen. CSS cannot say "at most what the rest leaves" (an auto
        height is not capped by ``max-height: 1fr``, and ``fr`` heights with limits share
        space unevenly in Textual 8), so the cap is worked out here, after every layout
        that changes the other panels: a resize, the filter box or the actions panel
        appearing or going. Flexible panels (the plots) count at their minimum height.
        """
        screen = self._main
        table = screen.query_one(ReplicaTable)
        others = 0
        for child in screen.children:
            if child is table or not child.display:
                continue
            height = child.styles.height
            if height is not None and height.unit is Unit.FRACTION:
                minimum = child.styles.min_height
                others += int(minimum.value) if minimum is not None else 0
            else:
                others += child.outer_size.height
        cap = max(MIN_TABLE_HEIGHT, screen.size.height - others)
        max_height = table.styles.max_height
        if max_height is None or max_height.value != cap:
            table.styles.max_height = cap

    # ------------------------------------------------------------------ data in

    def _deliver(self, snapshot: Snapshot) -> None:
        """Called on the poller thread."""
        self.call_soon_threadsafe(self.apply_snapshot, snapshot)

    def _connecting(self, source: str) -> None:
        """Called on the poller thread: what the first poll reads, while it is on its way."""
        self.call_soon_threadsafe(self.show_source, source)

    def show_source(self, source: str) -> None:
        self.source = source
        if self.snapshot is None:
            self.render_all()

    def call_soon_threadsafe(self, callback: Callable[[T], object], arg: T) -> None:
        """Run ``callback(arg)`` on the UI loop, from any thread, without waiting for it.

        Never waits: at quit the UI thread joins the poller thread, and a blocking
        hand-over would deadlock the two. Dropped once wfdash is exiting.
        """
        loop = self._ui_loop
        if loop is None:
            return

        def run() -> None:
            if self.is_running and self.screen_stack:
                callback(arg)

        with contextlib.suppress(RuntimeError):  # the UI loop has closed: wfdash is exiting
            loop.call_soon_threadsafe(run)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        names = [v.service.name for v in snapshot.services]
        if self.service_name not in names:
            self.service_name = names[0] if names else None
        if snapshot.events or not self._events:
            self._load_events()
        self.render_all()
        if (detail := self._replica_detail()) is not None:
            detail.update_view()

    def _load_events(self) -> None:
        if self.store is None:
            self._events = list(self.snapshot.events) if self.snapshot else []
            return
        self._events = self.store.query(service=self.service_name, limit=200)

    @property
    def current(self) -> ServiceView | None:
        if self.snapshot is None:
            return None
        return next(
            (v for v in self.snapshot.services if v.service.name == self.service_name), None
        )

    # ------------------------------------------------------------------ rendering

    def _var(self, name: str, fallback: str = "") -> str:
        """A theme colour as rich understands it (ANSI themes use names like ansi_green)."""
        if self._css_theme != self.theme:
            # Rebuilding the colour system costs ~0.5 ms a call: once per theme is enough.
            self._css_variables, self._css_theme = self.get_css_variables(), self.theme
        value = self._css_variables.get(name)
        return rich_color(value) if value else fallback

    def palette(self) -> panels.Palette:
        return panels.Palette(
            ok=self._var("success"),
            warn=self._var("warning"),
            bad=self._var("error"),
            dim=self._var("stale"),
            accent=self._var("accent"),
            base=self._var("layer-base"),
            burst=self._var("layer-burst"),
        )

    def cell_styles(self) -> Styles:
        return Styles(
            ready=self._var("status-ready"),
            launching=self._var("status-launching"),
            not_ready=self._var("status-not-ready"),
            failed=self._var("status-failed"),
            preempted=self._var("status-preempted"),
            stale=self._var("stale"),
            base=self._var("layer-base"),
            burst=self._var("layer-burst"),
            spark=self._var("sparkline"),
        )

    # What the rendering methods last built from (class defaults, replaced per instance).
    _cost_for: tuple[object, ...] = ()
    _events_for: tuple[object, ...] = ()

    def render_all(self) -> None:
        view = self.current
        palette = self.palette()
        now = self.clock()
        # The cost changes with the service only: the 1 s header tick reuses it, and so do
        # polls that bring new metrics but the same (immutable) Service.
        service = view.service if view is not None else None
        if service is None:
            self._cost = None
        elif not _built_from(self._cost_for, service, self.pool_hosts):
            # Imported with the first service: the price tables are not needed before.
            from wfdash.cost import service_cost

            self._cost = service_cost(service, pool_hosts=self.pool_hosts)
        self._cost_for = (service, self.pool_hosts)
        cost = self._cost
        self._tick_header()
        spill = self._main.query_one("#spillover", Static)
        if view is None or cost is None:
            _show(spill, self._empty_state(), layout=False)
        else:
            _show(
                spill,
                panels.spillover(
                    view, cost, pool_hosts=self.pool_hosts, ascii=self.ascii, palette=palette
                ),
                layout=False,
            )
        self.render_summary()
        self.render_actions()
        self.render_table()
        clusters = self.snapshot.clusters if self.snapshot else ()
        _show(
            self._main.query_one("#clusters", Static),
            Text("\n").join(panels.cluster_line(c, now, palette) for c in clusters)
            if clusters
            else Text.assemble(("none", palette.dim)),
        )
        # The event list is replaced, never changed in place, when events are loaded.
        if not _built_from(self._events_for, self._events, palette):
            _show(
                self._main.query_one("#events", Static),
                panels.event_lines(self._events, palette, limit=50),
            )
            self._events_for = (self._events, palette)
        self.render_plots()

    def render_summary(self) -> None:
        """The service's numbers, or the pending +/- change while there is one."""
        view = self.current
        summary = self._main.query_one("#summary", Static)
        pending = self.flows.pending_text()
        if pending is not None:
            pending.stylize(self._var("accent"))
            _show(summary, pending, layout=False)
        else:
            _show(summary, panels.service_summary(view) if view is not None else "", layout=False)

    def render_actions(self) -> None:
        """The progress panel: running actions, and those that finished moments ago."""
        panel = self._main.query_one("#actions", Static)
        now = self.clock()
        records = self.flows.panel_records(now)
        shown = panel.display
        panel.display = bool(records)
        if records:
            from wfdash.ui.control import record_line  # loaded with the first action

            palette = self.palette()
            panel.update(Text("\n").join(record_line(r, now, palette) for r in records[:4]))
        if records or shown:  # the panel's height may have changed: so has the table's room
            self.call_after_refresh(self._fit_table)
        if (actions_log := self._actions_log()) is not None:
            actions_log.update_view()

    def action_finished(self) -> None:
        """An action ended: its audit entry is in the store, and the fleet changed."""
        self._load_events()
        self._main.query_one("#events", Static).update(
            panels.event_lines(self._events, self.palette(), limit=50)
        )
        if self._poller_thread is not None:
            self._poller_thread.refresh_now()

    def selected_replica(self) -> ReplicaView | None:
        key = self._main.query_one(ReplicaTable).selected_key
        view = self.current
        if key is None or view is None:
            return None
        return next((r for r in view.replicas if r.replica.key == key), None)

    def render_table(self) -> None:
        """The replica table alone: what a filter keystroke or a sort changes."""
        view = self.current
        table = self._main.query_one(ReplicaTable)
        rows = (
            arrange(view.replicas, table.sort_column, table.sort_reverse, self.filter_text)
            if view
            else []
        )
        table.show(rows, self.clock(), self.cell_styles(), ascii=self.ascii)

    def _header_timer(self) -> None:
        # The timer can fire once more while the app shuts down and its widgets are gone.
        with contextlib.suppress(NoMatches):
            self._tick_header()
            if self.flows.records and (
                self._main.query_one("#actions").display or self._actions_log() is not None
            ):
                self.render_actions()  # elapsed times, and finished ones leave the panel

    def _tick_header(self) -> None:
        view = self.current
        cost = self._cost
        names = [v.service.name for v in self.snapshot.services] if self.snapshot else []
        index = (
            (names.index(self.service_name), len(names)) if self.service_name in names else (0, 0)
        )
        _show(
            self._main.query_one("#header", Static),
            panels.header(
                view,
                self.snapshot,
                cost,
                now=self.clock(),
                paused=self.paused,
                interval=self.interval,
                read_only=self.read_only,
                palette=self.palette(),
                service_index=index,
                source=self.source,
            ),
            layout=False,
        )

    def _empty_state(self) -> Text:
        palette = self.palette()
        if self.snapshot is None:
            where = f" to {self.source}" if self.source else ""
            return Text.assemble((f"Connecting{where}… the first poll is on its way.", palette.dim))
        if not self.snapshot.status_ok:
            text = Text.assemble(("Cannot read service status: ", f"bold {palette.bad}"))
            text.append(self.snapshot.status_error or "unknown error")
            text.append(
                "\nwfdash retries with backoff. Try `wfdash demo` for the local sandbox.",
                style=palette.dim,
            )
            return text
        text = Text.assemble(("No SkyServe services on this API server.", "bold"))
        text.append(
            "\nStart one with `sky serve up skypilot/service.yaml -n NAME`, or run `wfdash demo` "
            "to explore wfdash on a local sandbox fleet.",
            style=palette.dim,
        )
        return text

    def render_plots(self) -> None:
        view = self.current
        if self._main.has_class("compact"):
            return
        qps_widget = self._main.query_one("#qps-plot", PlotView)
        ttft_widget = self._main.query_one("#ttft-plot", PlotView)
        width = max(20, qps_widget.size.width or (self.size.width // 2 - 2))
        height = max(5, qps_widget.size.height or 10)
        now = self.snapshot.taken_at if self.snapshot else self.clock()
        drawn = (self.service_name, self.theme, self.ascii, width, height)
        # Empty plots depend on nothing else: the resizes and the mount before the first
        # paint would draw them three times over.
        if drawn == self._plots_drawn and (
            view is None or now - self._plots_at < plot_period(view.history_t, now, width)
        ):
            return
        self._plots_drawn, self._plots_at = drawn, now
        plot = partial(
            render_plot,
            width=width,
            height=height,
            now=now,
            ascii=self.ascii,
            background=self._var("surface") or None,
            foreground=self._var("foreground") or None,
        )
        if view is None:
            qps_widget.update(plot([], title="QPS"))
            ttft_widget.update(plot([], title="TTFT"))
            return
        t = view.history_t
        qps_series = [PlotSeries("QPS", t, view.qps_history, self._var("plot-qps"))]
        if all(v is None for v in view.qps_history) and _without_request_counter(view):
            tps = _sum_series(r.tps_history for r in view.replicas)
            qps_series = [
                PlotSeries("tok/s (no request counter)", t[-len(tps) :], tps, self._var("plot-qps"))
            ]
        target = [PlotSeries("target replicas", t, view.target_history, self._var("plot-target"))]
        qps_widget.update(plot(qps_series, title="Service QPS", step_series=target))
        ttft_title = "TTFT (s)"
        if all(v is None for v in view.ttft_p95_history) and any(
            r.metrics and r.metrics.ttft_is_estimate for r in view.replicas
        ):
            ttft_title = "TTFT: llama.cpp has no latency histogram"
        ttft_series = [
            PlotSeries("p50", t, view.ttft_p50_history, self._var("plot-ttft-p50")),
            PlotSeries("p95", t, view.ttft_p95_history, self._var("plot-ttft-p95")),
        ]
        ttft_widget.update(plot(ttft_series, title=ttft_title))

    # ------------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MAIN_SCREEN_ACTIONS and len(self.screen_stack) > 1:
            return False  # the help, detail and action screens do not act on the table
        if action in MUTATING_ACTIONS and not self.may_change():
            return None  # shown, greyed out: read-only mode
        return True

    def may_change(self) -> bool:
        """False in read-only mode: the one switch the mutating keys and palette commands
        go through (the ActionRunner refuses on its own as well)."""
        return not self.read_only

    # The control flows (wfdash.ui.flows): each ends in a preview the user confirms.

    def action_scale_step(self, delta: int) -> None:
        self.flows.step_min(delta)

    def action_scale(self) -> None:
        self.flows.open_scale()

    def action_backend(self) -> None:
        self.flows.open_backend()

    def action_launch(self) -> None:
        self.flows.open_launch()

    def action_rebuild(self) -> None:
        self.flows.open_rebuild()

    def action_terminate(self) -> None:
        self.flows.terminate_selected()

    def action_down(self) -> None:
        self.flows.down_service()

    # The screens over the dashboard load with the first one opened: their modules are not
    # needed for the first paint. Until one is open, none of them can be on top.

    def _replica_detail(self) -> ReplicaDetailScreen | None:
        """A replica's detail, when it is the screen on top."""
        if len(self.screen_stack) > 1:
            from wfdash.ui.screens import ReplicaDetailScreen

            if isinstance(self.screen, ReplicaDetailScreen):
                return self.screen
        return None

    def _actions_log(self) -> ActionsScreen | None:
        """The actions log, when it is the screen on top."""
        if len(self.screen_stack) > 1:
            from wfdash.ui.control import ActionsScreen

            if isinstance(self.screen, ActionsScreen):
                return self.screen
        return None

    def action_actions(self) -> None:
        from wfdash.ui.control import ActionsScreen

        self.push_screen(
            ActionsScreen(
                self.flows.session_records, self.flows.cancel, self.palette, clock=self.clock
            )
        )

    def action_help(self) -> None:
        from wfdash.ui.screens import HelpScreen

        self.push_screen(HelpScreen())

    async def action_filter(self) -> None:
        try:
            box = self._main.query_one("#filter", Input)
        except NoMatches:
            # Mounted at the first "/", not composed: an input box's widget and styles
            # cost start-up time that the first paint does not need.
            box = Input(placeholder="filter replicas: words to match, escape clears", id="filter")
            await self._main.mount(box, before=self._main.query_one(Footer))
        box.display = True
        box.focus()
        self.call_after_refresh(self._fit_table)

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self.render_table()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self._main.query_one(ReplicaTable).focus()

    def action_clear_filter(self) -> None:
        if self.flows.cancel_pending():
            self.notify("Pending change dropped: nothing was changed.", timeout=3)
            return
        for box in self._main.query("#filter").results(Input):
            box.value = ""
            box.display = False
            self.call_after_refresh(self._fit_table)
        self.filter_text = ""
        self._main.query_one(ReplicaTable).focus()
        self.render_table()

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        if self._poller_thread is not None:
            self._poller_thread.paused = self.paused
        self.notify(
            "Polling paused: the screen keeps the last data" if self.paused else "Polling resumed"
        )
        self._tick_header()

    def action_refresh_now(self) -> None:
        if self._poller_thread is not None:
            self._poller_thread.refresh_now()
        self.notify("Refreshing…", timeout=1.5)

    def action_sort(self, key: str) -> None:
        table = self._main.query_one(ReplicaTable)
        if table.sort_column == key:
            table.sort_reverse = not table.sort_reverse
        else:
            table.sort_column, table.sort_reverse = key, False
        table.label_columns()
        self.render_table()

    @on(ReplicaTable.HeaderClicked)
    def _header_clicked(self, event: ReplicaTable.HeaderClicked) -> None:
        self.action_sort(event.column)

    def action_next_service(self, step: int = 1) -> None:
        names = [v.service.name for v in self.snapshot.services] if self.snapshot else []
        if len(names) < 2:
            self.notify("Only one service" if names else "No services")
            return
        index = names.index(self.service_name) if self.service_name in names else 0
        self.switch_service(names[(index + step) % len(names)])

    def action_previous_service(self) -> None:
        self.action_next_service(-1)

    def switch_service(self, name: str) -> None:
        self.service_name = name
        self._load_events()
        self.render_all()

    def action_detail(self) -> None:
        from wfdash.ui.screens import ReplicaDetailScreen

        key = self._main.query_one(ReplicaTable).selected_key
        view = self.current
        if key is None or view is None:
            return
        service = view.service.name
        self.push_screen(
            ReplicaDetailScreen(
                service,
                key,
                find=partial(self._find_replica, service, key),
                events=partial(self._replica_events, service),
                palette=self.palette,
                clock=self.clock,
            )
        )

    @on(ReplicaTable.RowChosen)
    def _row_selected(self) -> None:
        self.action_detail()

    def _find_replica(self, service: str, key: str) -> ReplicaView | None:
        if self.snapshot is None:
            return None
        for view in self.snapshot.services:
            if view.service.name == service:
                return next((r for r in view.replicas if r.replica.key == key), None)
        return None

    def _replica_events(self, service: str, replica_id: int) -> Sequence[Event]:
        if self.store is None:
            return [e for e in self._events if e.replica_id == replica_id]
        return [
            e for e in self.store.query(service=service, limit=500) if e.replica_id == replica_id
        ]

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help", "Every key and what the screen shows", self.action_help)
        yield SystemCommand("Filter replicas", "Type words to match", self.action_filter)
        yield SystemCommand(
            "Pause / resume polling", "Keep the current data on screen", self.action_toggle_pause
        )
        yield SystemCommand("Refresh now", "Poll status and metrics now", self.action_refresh_now)
        yield SystemCommand(
            "Replica detail", "All metrics and events of the selected replica", self.action_detail
        )
        yield SystemCommand(
            "Wide table / fit columns",
            "All columns, scrolled sideways; again: the columns that fit the screen",
            self._main.query_one(ReplicaTable).action_toggle_wide,
        )
        for column in COLUMNS:
            yield SystemCommand(
                f"Sort by {column.label}", "Again reverses", partial(self.action_sort, column.key)
            )
        for view in self.snapshot.services if self.snapshot else ():
            name = view.service.name
            yield SystemCommand(
                f"Service: {name}", f"Show {name}", partial(self.switch_service, name)
            )
        yield SystemCommand(
            "Actions and their logs", "This session's actions; cancel one", self.action_actions
        )
        if not self.may_change():
            return  # read-only: no command that changes anything is offered
        for title, help_text, action in (
            ("Scale…", "Min/max replicas and target QPS (sky serve update)", self.action_scale),
            ("Min replicas +1", "Preview one more replica", partial(self.action_scale_step, 1)),
            ("Min replicas −1", "Preview one fewer replica", partial(self.action_scale_step, -1)),
            ("Switch backend…", "bitnet ⇄ vllm, rolling or blue-green", self.action_backend),
            (
                "Launch replica…",
                "A C3D / H3 / RunPod BitNet cluster (sky launch)",
                self.action_launch,
            ),
            ("Rebuild cache…", "Bump CACHE_VERSION: BitNet.cpp is rebuilt", self.action_rebuild),
            ("Terminate replica", "The selected one (type its id)", self.action_terminate),
            ("Down service", "sky serve down (asks for the service name)", self.action_down),
        ):
            yield SystemCommand(title, help_text, action)


def plot_period(history_t: Sequence[float], now: float, width: int) -> float:
    """Seconds between plot redraws: PLOT_REFRESH_S, or one column's worth of the history
    window the plot spans (``width`` columns; the canvas is a little narrower, so a
    column really covers a little more)."""
    span = now - history_t[0] if history_t else 0.0
    return max(PLOT_REFRESH_S, span / max(width, 1))


def _built_from(held: tuple[object, ...], source: object, *options: object) -> bool:
    """Whether ``held`` is ``(source, *options)``: the same (immutable) source object, held
    so that its id cannot be reused, and equal options."""
    return bool(held) and held[0] is source and held[1:] == options


def _show(widget: Static, content: Text | str, *, layout: bool = True) -> None:
    """``widget.update(content)``, unless it shows exactly that already.

    An update re-renders the widget and, with ``layout``, lays the whole screen out again:
    the 1 s header tick and every poll did that for panels that had not changed. Only
    widgets of a fixed height (header, spillover, summary) pass ``layout=False``.
    """
    if not _same_content(widget.content, content):
        widget.update(content, layout=layout)


def _same_content(shown: object, content: Text | str) -> bool:
    if isinstance(shown, Text) and isinstance(content, Text):
        # Text's own == compares only the characters and spans.
        return (
            shown.plain == content.plain
            and shown.spans == content.spans
            and shown.style == content.style
            and (shown.justify, shown.overflow, shown.no_wrap, shown.end, shown.tab_size)
            == (content.justify, content.overflow, content.no_wrap, content.end, content.tab_size)
        )
    return type(shown) is type(content) and shown == content


def _without_request_counter(view: ServiceView) -> bool:
    """Replicas have rates (two scrapes or more) but none counts requests (llama-server
    without the agent): not merely too early for a QPS."""
    windowed = [r.metrics for r in view.replicas if r.metrics is not None and r.metrics.window_s]
    return bool(windowed) and all(m.qps is None for m in windowed)


def _sum_series(histories: Iterable[Sequence[float | None]]) -> list[float | None]:
    """Element-wise sum aligned at the newest point; None where no replica had a value."""
    histories = [h for h in histories if h]
    if not histories:
        return []
    length = max(len(h) for h in histories)
    out: list[float | None] = []
    for i in range(length):
        values = [h[len(h) - length + i] for h in histories if len(h) - length + i >= 0]
        known = [v for v in values if v is not None]
        out.append(sum(known) if known else None)
    return out
