"""What the dashboard redraws, and what it leaves alone, when snapshots and ticks arrive.

Skipping work must never hide a change: each test checks both that an unchanged panel is
left alone and that a changed one is redrawn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from rich.text import Text
from textual.widgets import Static

from snapshots import fixtures
from tests.test_ui_keys import plain
from wfdash import cost as cost_module
from wfdash.collect.snapshot import Snapshot
from wfdash.cost import service_cost
from wfdash.format import fmt_money
from wfdash.ui import app as app_module
from wfdash.ui.app import PLOT_REFRESH_S, PlotView, WfdashApp, plot_period
from wfdash.ui.plot import render_plot
from wfdash.ui.replica_table import ReplicaTable

SIZE = (160, 48)
PANELS = ("#header", "#spillover", "#summary", "#clusters", "#events")


pytestmark = pytest.mark.usefixtures("ui_env")


def spy_updates(app: WfdashApp) -> dict[str, list[bool]]:
    """The ``layout`` argument of every update of the main panels, by panel."""
    calls: dict[str, list[bool]] = {name: [] for name in PANELS}
    for name in PANELS:
        widget = app.query_one(name, Static)
        original = widget.update

        def update(
            content: Any = "",
            *,
            layout: bool = True,
            _name: str = name,
            _original: Callable[..., None] = original,
        ) -> None:
            calls[_name].append(layout)
            _original(content, layout=layout)

        widget.update = update  # type: ignore[method-assign]
    return calls


def later(snapshot: Snapshot, seconds: float) -> Snapshot:
    return dataclasses.replace(snapshot, taken_at=snapshot.taken_at + seconds)


async def test_an_unchanged_poll_and_header_ticks_leave_the_panels_alone() -> None:
    clock = fixtures.FakeClock(fixtures.EPOCH)
    app = WfdashApp(store=None, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        snapshot = fixtures.healthy()
        app.apply_snapshot(snapshot)
        await pilot.pause()
        calls = spy_updates(app)
        for _ in range(3):
            app._header_timer()
        clock.t += 2
        app.apply_snapshot(later(snapshot, 2))
        await pilot.pause()
        assert calls == {name: [] for name in PANELS}


async def test_the_header_follows_pause_and_staleness_without_a_relayout() -> None:
    clock = fixtures.FakeClock(fixtures.EPOCH)
    app = WfdashApp(store=None, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.apply_snapshot(fixtures.healthy())
        await pilot.pause()
        calls = spy_updates(app)
        header = app.query_one("#header", Static)
        assert "[LIVE]" in plain(header)
        clock.t += 60  # no poll for a minute: the 1 s tick must say so
        app._header_timer()
        assert "[STALE 1m]" in plain(header)
        clock.t += 1
        app._header_timer()
        assert "[STALE 1m]" in plain(header)  # the same text: not redrawn
        clock.t += 60
        app._header_timer()
        assert "[STALE 2m]" in plain(header)
        assert calls["#header"] == [False, False]  # a fixed-height line: no relayout
        await pilot.press("p")
        assert "[PAUSED]" in plain(header)


async def test_cost_follows_a_changed_service_and_is_reused_for_the_same_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    computed: list[object] = []

    def counting(service: Any, **kwargs: Any) -> Any:
        computed.append(service)
        return service_cost(service, **kwargs)

    monkeypatch.setattr(cost_module, "service_cost", counting)
    before, after = fixtures.healthy(), fixtures.healthy_plus_one()
    clock = fixtures.FakeClock(fixtures.EPOCH)
    app = WfdashApp(store=None, clock=clock, pool_hosts=3)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.apply_snapshot(before)
        app.apply_snapshot(later(before, 2))  # new metrics, the same Service
        assert computed == [before.services[0].service]
        clock.t = after.taken_at
        app.apply_snapshot(after)
        await pilot.pause()
        service = after.services[0].service
        assert computed[-1] is service and len(computed) == 2
        expected = fmt_money(service_cost(service, pool_hosts=3).total_per_hour)
        assert expected in plain(app.query_one("#header", Static))
        assert expected != fmt_money(
            service_cost(before.services[0].service, pool_hosts=3).total_per_hour
        )


async def test_events_and_clusters_are_redrawn_when_they_change() -> None:
    app = WfdashApp(store=None, clock=fixtures.clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.apply_snapshot(fixtures.healthy())
        await pilot.pause()
        events = app.query_one("#events", Static)
        clusters = app.query_one("#clusters", Static)
        before_events, before_clusters = plain(events), plain(clusters)
        troubled = fixtures.troubled()
        assert troubled.events
        app.apply_snapshot(troubled)
        await pilot.pause()
        assert plain(events) != before_events
        assert troubled.events[0].message in plain(events)
        app.apply_snapshot(dataclasses.replace(troubled, clusters=()))
        await pilot.pause()
        assert plain(clusters) == "none" != before_clusters


def test_plot_period_is_one_column_of_the_window_or_the_floor() -> None:
    assert plot_period([], 100.0, 78) == PLOT_REFRESH_S
    assert plot_period([40.0, 70.0], 100.0, 78) == PLOT_REFRESH_S  # a minute: floor
    assert plot_period([0.0], 600.0, 78) == pytest.approx(600 / 78)  # 10 min: 7.7 s
    assert plot_period([0.0], 3600.0, 78) == pytest.approx(3600 / 78)


async def test_plots_are_redrawn_once_per_period(monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[float] = []
    original = render_plot

    def counting(*args: Any, **kwargs: Any) -> Text:
        if kwargs.get("title") == "Service QPS":
            builds.append(kwargs["now"])
        return original(*args, **kwargs)

    monkeypatch.setattr(app_module, "render_plot", counting)
    snapshot = fixtures.healthy()
    view = snapshot.services[0]
    # An hour of history: one column of the plot is then longer than the floor.
    long_view = dataclasses.replace(view, history_t=(snapshot.taken_at - 3600, *view.history_t[1:]))
    snapshot = dataclasses.replace(snapshot, services=(long_view,))
    clock = fixtures.FakeClock(snapshot.taken_at)
    app = WfdashApp(store=None, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        width = app.query_one("#qps-plot", PlotView).size.width
        period = 3600 / width
        assert period > PLOT_REFRESH_S
        app.apply_snapshot(snapshot)
        builds.clear()
        step = 2.0
        for i in range(1, 120):
            app.apply_snapshot(later(snapshot, i * step))
        await pilot.pause()
    drawn = [snapshot.taken_at]
    for i in range(1, 120):
        now = snapshot.taken_at + i * step
        if now - drawn[-1] >= 3600 / width + (now - snapshot.taken_at) / width:
            drawn.append(now)
    assert builds == drawn[1:]
    assert len(builds) >= 2


async def test_empty_plots_are_drawn_once_per_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the first snapshot the plots depend on their size alone: the resizes and the
    mount before the first paint must not draw them again at the same size."""
    sizes: list[tuple[int, int]] = []
    original = render_plot

    def counting(*args: Any, **kwargs: Any) -> Text:
        if kwargs.get("title") == "QPS":
            sizes.append((kwargs["width"], kwargs["height"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(app_module, "render_plot", counting)
    app = WfdashApp(store=None, clock=fixtures.FakeClock(fixtures.EPOCH))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.render_plots()
        await pilot.pause()
    assert sizes and len(sizes) == len(set(sizes))


async def screen_after(snapshots: list[Snapshot], *, cursor: int = 0) -> str:
    clock = fixtures.FakeClock(snapshots[0].taken_at)
    app = WfdashApp(store=None, clock=clock)
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.pause()
        for snapshot in snapshots:
            clock.t = snapshot.taken_at
            app.apply_snapshot(snapshot)
            await pilot.pause()
            app.query_one(ReplicaTable).action_cursor_to(cursor)
            await pilot.pause()
        return app.export_screenshot()


@pytest.mark.parametrize("cursor", [0, 3])
async def test_a_refresh_in_place_paints_what_a_fresh_start_paints(cursor: int) -> None:
    """Only changed lines are repainted: the screen must still equal a fresh app's."""
    before, after = fixtures.healthy(), fixtures.healthy_plus_one()
    assert await screen_after([before, after], cursor=cursor) == await screen_after(
        [after], cursor=cursor
    )


async def test_a_refresh_asks_to_repaint_exactly_the_changed_rows() -> None:
    before, after = fixtures.healthy(), fixtures.healthy_plus_one()
    clock = fixtures.FakeClock(before.taken_at)
    app = WfdashApp(store=None, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.apply_snapshot(before)
        await pilot.pause()
        table = app.query_one(ReplicaTable)
        height = table.scrollable_content_region.height
        painted = {y: table.render_line(y) for y in range(1, height)}
        asked: set[int] = set()
        original = table.refresh

        def refresh(*regions: Any, **kwargs: Any) -> Any:
            for region in regions:
                asked.update(range(region.y, region.y + region.height))
            return original(*regions, **kwargs)

        table.refresh = refresh  # type: ignore[method-assign]
        clock.t = after.taken_at
        app.apply_snapshot(after)
        changed = {y for y in range(1, height) if table.render_line(y) != painted[y]}
        assert changed  # a new row, and the others' numbers moved
        assert asked == changed


async def test_the_first_paint_hook_runs_once_after_the_first_frame() -> None:
    """What waits for the first paint (collection resumed, the poller started) runs once,
    when the first frame is on screen, and not again with later refreshes."""
    painted: list[bool] = []
    app: WfdashApp

    def on_first_paint() -> None:
        painted.append(bool(app.screen.query_one("#header", Static).render()))

    app = WfdashApp(
        store=None, clock=fixtures.FakeClock(fixtures.EPOCH), on_first_paint=on_first_paint
    )
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.apply_snapshot(fixtures.healthy())
        await pilot.pause()
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
    assert painted == [True]


def test_the_qps_plot_falls_back_to_tokens_only_without_a_request_counter() -> None:
    """BitNet's bare llama-server counts no requests: its plot shows tok/s instead. Just
    after start (one scrape, no rate yet) or with no metrics at all, it is too early to
    tell, and the plot stays a QPS plot."""
    from wfdash.ui.app import _without_request_counter

    assert _without_request_counter(fixtures.bitnet().services[0])
    assert not _without_request_counter(fixtures.healthy().services[0])
    early = fixtures.bitnet().services[0]
    no_rates = dataclasses.replace(
        early,
        replicas=tuple(
            dataclasses.replace(
                r, metrics=r.metrics and dataclasses.replace(r.metrics, window_s=None)
            )
            for r in early.replicas
        ),
    )
    assert not _without_request_counter(no_rates)
    unscraped = dataclasses.replace(
        early, replicas=tuple(dataclasses.replace(r, metrics=None) for r in early.replicas)
    )
    assert not _without_request_counter(unscraped)


async def test_before_the_first_poll_the_screen_says_what_it_is_reading() -> None:
    """The first status from SkyPilot takes seconds (``import sky``): the header and the
    empty panel name the source as soon as the poller thread knows it."""
    from tests.test_ui_keys import plain

    app = WfdashApp(store=None, clock=fixtures.FakeClock(fixtures.EPOCH))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "Connecting… the first poll" in plain(app.query_one("#spillover", Static))
        app.show_source("skypilot http://10.0.0.5:46580")
        await pilot.pause()
        assert "wfdash · skypilot http://10.0.0.5:46580 [CONNECTING]" in plain(
            app.query_one("#header", Static)
        )
        assert "Connecting to skypilot http://10.0.0.5:46580… the first poll" in plain(
            app.query_one("#spillover", Static)
        )
        app.apply_snapshot(fixtures.healthy())
        await pilot.pause()
        assert "skypilot" not in plain(app.query_one("#header", Static))


def test_the_poller_thread_names_its_source_before_the_first_poll() -> None:
    import threading
    from types import SimpleNamespace

    from wfdash.ui.poller_thread import PollerThread

    told: list[str] = []
    delivered = threading.Event()

    class Source:
        description = "skypilot http://10.0.0.5:46580"

    async def aclose() -> None:
        return None

    class OnePoll:
        source = Source()
        scraper = SimpleNamespace(aclose=aclose)  # what PollerThread closes at the end

        async def run(self, deliver: Any, *_: Any, **__: Any) -> None:
            assert told == [Source.description]  # before anything is read
            delivered.set()

    thread = PollerThread(OnePoll, lambda _: None, told.append)  # type: ignore[arg-type]
    thread.start()
    assert delivered.wait(10)
    thread.stop()
    assert told == [Source.description]
