"""The dashboard's keyboard flows, driven with Textual's Pilot on deterministic snapshots.

The snapshots come from ``snapshots/fixtures.py`` (the real collection pipeline on a fake
clock); the screenshots of the same screens are in ``snapshots/test_screens.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from rich.text import Text
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot
from textual.widgets import Input, Static

from snapshots import fixtures
from wfdash.collect.poller import Poller, PollerConfig
from wfdash.collect.scrape import Scraper
from wfdash.collect.snapshot import Snapshot
from wfdash.ui.app import PlotView, WfdashApp
from wfdash.ui.replica_table import ReplicaTable
from wfdash.ui.screens import HelpScreen, ReplicaDetailScreen

SIZE = (160, 48)


pytestmark = pytest.mark.usefixtures("ui_env")


def make_app(**options: Any) -> WfdashApp:
    options.setdefault("clock", fixtures.clock)
    return WfdashApp(store=None, **options)


async def show(pilot: Pilot[Any], snapshot: Snapshot) -> None:
    """Deliver a snapshot after the first paint, as the poller thread does."""
    await pilot.pause()
    app = pilot.app
    assert isinstance(app, WfdashApp)
    app.apply_snapshot(snapshot)
    await pilot.pause()


def plain(widget: Static) -> str:
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


def header(app: WfdashApp) -> str:
    return plain(app.query_one("#header", Static))


def table(app: WfdashApp) -> ReplicaTable:
    return app.query_one(ReplicaTable)


def row_keys(app: WfdashApp) -> list[str]:
    return table(app).row_keys


def ids(app: WfdashApp) -> list[int]:
    return [int(key.rsplit("#", 1)[1]) for key in row_keys(app)]


def qps_order(snapshot: Snapshot, *, reverse: bool) -> list[int]:
    replicas = snapshot.services[0].replicas
    ordered = sorted(
        (r for r in replicas if r.metrics and r.metrics.qps is not None),
        key=lambda r: r.metrics.qps if r.metrics and r.metrics.qps is not None else 0.0,
        reverse=reverse,
    )
    return [r.replica.replica_id for r in ordered]


def label(app: WfdashApp, column: str) -> str:
    return table(app).header_label(column)


# --------------------------------------------------------------------------- filter


async def test_filter_narrows_rows_and_escape_clears() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, fixtures.healthy())
        assert ids(app) == [1, 2, 3, 4, 5]
        assert not app.query("#filter")  # mounted at the first "/" only
        await pilot.press("slash")
        box = app.query_one("#filter", Input)
        assert box.display and box.has_focus
        await pilot.press(*"spot")
        await pilot.pause()
        assert app.filter_text == "spot"
        assert ids(app) == [4, 5]  # the burst replicas
        await pilot.pause(0.1)
        # The table shrank to its minimum (border, header, 2 rows, 1 blank): no stale height.
        assert table(app).outer_size.height == 5
        await pilot.press("space", *"base")  # every word must match: nothing does
        await pilot.pause()
        assert ids(app) == []
        await pilot.press("escape")
        await pilot.pause()
        assert app.filter_text == "" and box.value == ""
        assert not box.display and table(app).has_focus
        assert ids(app) == [1, 2, 3, 4, 5]
        await pilot.pause(0.1)
        assert table(app).outer_size.height == 7  # border, header, 5 rows
        await pilot.press("slash")  # the same box again, empty
        assert app.query_one("#filter", Input) is box
        assert box.display and box.has_focus and box.value == ""


async def test_filter_enter_keeps_the_filter_and_returns_to_the_table() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, fixtures.troubled())
        await pilot.press("slash", *"timeout", "enter")
        await pilot.pause()
        assert table(app).has_focus
        assert ids(app) == [5]  # matches the scrape error too
        await pilot.press("escape")
        await pilot.pause()
        assert ids(app) == [1, 2, 3, 5, 6]


# --------------------------------------------------------------------------- sort


async def test_digit_sorts_and_the_same_digit_reverses() -> None:
    snapshot = fixtures.healthy()
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, snapshot)
        assert label(app, "id") == "ID ▲"  # the default order is shown as a sort
        await pilot.press("6")
        await pilot.pause()
        assert (table(app).sort_column, table(app).sort_reverse) == ("qps", False)
        assert label(app, "qps") == "QPS ▲"
        assert ids(app) == qps_order(snapshot, reverse=False)
        await pilot.press("6")
        await pilot.pause()
        assert table(app).sort_reverse
        assert label(app, "qps") == "QPS ▼"
        assert ids(app) == qps_order(snapshot, reverse=True)
        await pilot.press("1")
        await pilot.pause()
        assert label(app, "id") == "ID ▲" and label(app, "qps") == "QPS"
        assert ids(app) == [1, 2, 3, 4, 5]


async def test_unknown_values_sort_last_in_both_directions() -> None:
    """Replica 6 is PROVISIONING: no QPS. It stays at the bottom, reversed or not."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, fixtures.troubled())
        await pilot.press("6")
        await pilot.pause()
        assert ids(app)[-1] == 6
        await pilot.press("6")
        await pilot.pause()
        assert ids(app)[-1] == 6


# --------------------------------------------------------------------------- pause


class Counting:
    """A MockTransport handler serving the healthy fleet's vLLM text, counting scrapes."""

    def __init__(self) -> None:
        self.records, self.fleet = fixtures.healthy_parts()
        self.scrapes = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.scrapes += 1
        return self.fleet.handler(request)


def live_poller(counting: Counting) -> Callable[[], Poller]:
    def make() -> Poller:
        source = fixtures.FakeSource()
        source.services = [fixtures.service(counting.records)]
        scraper = Scraper(timeout=1.0, transport=httpx.MockTransport(counting.handler))
        return Poller(source, scraper, config=PollerConfig(metrics_interval=0.05))

    return make


async def wait_for(condition: Callable[[], bool], pilot: Pilot[Any], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.02)


async def settle(counting: Counting, pilot: Pilot[Any], quiet: float = 0.4) -> int:
    """Wait until no scrape happened for ``quiet`` seconds (a cycle under way finishes)."""
    deadline = time.monotonic() + 10
    while True:
        seen = counting.scrapes
        await pilot.pause(quiet)
        if counting.scrapes == seen:
            return seen
        assert time.monotonic() < deadline, "polling never stopped"


async def test_pause_stops_polling_and_refresh_runs_one_cycle() -> None:
    counting = Counting()
    app = WfdashApp(make_poller=live_poller(counting), store=None, interval=0.05)
    notes: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        original = app.notify

        def notify(message: str, **kwargs: Any) -> None:
            notes.append(message)
            original(message, **kwargs)

        app.notify = notify  # type: ignore[method-assign]
        await wait_for(lambda: app.snapshot is not None and counting.scrapes >= 10, pilot)
        assert "[LIVE]" in header(app)
        await pilot.press("p")
        assert app.paused and "[PAUSED]" in header(app)
        assert notes[-1].startswith("Polling paused")
        paused_at = await settle(counting, pilot)
        await asyncio.sleep(0.4)  # ≈ 8 intervals
        assert counting.scrapes == paused_at
        await pilot.press("r")  # refresh now: exactly one cycle (5 scrapes), still paused
        await wait_for(lambda: counting.scrapes > paused_at, pilot)
        assert await settle(counting, pilot) == paused_at + len(counting.records)
        assert app.paused and notes[-1] == "Refreshing…"
        await pilot.press("p")
        assert not app.paused and notes[-1] == "Polling resumed"
        resumed_at = counting.scrapes
        await wait_for(lambda: counting.scrapes >= resumed_at + 10, pilot)
        assert "[PAUSED]" not in header(app)


# --------------------------------------------------------------------------- detail


async def test_enter_opens_the_selected_replica_and_escape_returns() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, fixtures.healthy())
        await pilot.press("down", "down", "down", "down")
        assert table(app).selected_key == "wf-bitnet-5#5"
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ReplicaDetailScreen)
        assert screen.replica_key == "wf-bitnet-5#5"
        body = plain(screen.query_one("#detail-body", Static))
        assert "wf-bitnet · replica 5 · wf-bitnet-5" in body
        assert "http://34.1.2.5:8080" in body and "Metrics (over 60s)" in body
        # Its own events only, rendered in UTC.
        assert "11-23 12:11:15 STATUS #5 STARTING→READY" in body
        assert "ADDED #5 PROVISIONING" in body
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ReplicaDetailScreen)
        assert table(app).selected_key == "wf-bitnet-5#5"


async def test_detail_follows_new_snapshots_and_notices_a_removed_replica() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, fixtures.healthy())
        await pilot.press("down", "down", "down", "enter")  # replica 4, spot
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ReplicaDetailScreen)
        troubled = fixtures.troubled()  # replica 4 was preempted there
        app.apply_snapshot(troubled)
        await pilot.pause()
        body = plain(screen.query_one("#detail-body", Static))
        assert "is gone" in body


async def test_help_opens_and_closes() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, fixtures.healthy())
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


# --------------------------------------------------------------------------- services


async def test_brackets_switch_the_service() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, fixtures.two_services())
        assert "wf-bitnet (1/2)" in header(app)
        assert row_keys(app) == [f"wf-bitnet-{i}#{i}" for i in range(1, 6)]
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert app.service_name == "wf-canary"
        assert "wf-canary (2/2)" in header(app) and "http://34.10.20.31:30001" in header(app)
        assert row_keys(app) == ["wf-canary-1#1", "wf-canary-2#2"]
        await pilot.press("right_square_bracket")  # wraps around
        await pilot.pause()
        assert app.service_name == "wf-bitnet"
        await pilot.press("left_square_bracket")
        await pilot.pause()
        assert app.service_name == "wf-canary"


async def test_brackets_with_one_service_say_so() -> None:
    app = make_app()
    notes: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, fixtures.healthy())
        app.notify = lambda message, **_: notes.append(message)  # type: ignore[method-assign]
        await pilot.press("right_square_bracket")
        assert notes == ["Only one service"] and app.service_name == "wf-bitnet"


# --------------------------------------------------------------------------- refresh


async def test_cursor_stays_on_its_replica_when_rows_are_inserted_and_reordered() -> None:
    before, after = fixtures.healthy(), fixtures.healthy_plus_one()
    clock = fixtures.FakeClock(fixtures.EPOCH)
    app = make_app(clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, before)
        await pilot.press("6", "6")  # QPS, highest first
        await pilot.pause()
        await pilot.press("down")  # replica 2, the second busiest: the least busy after
        selected = table(app).selected_key
        assert selected is not None
        position = table(app).cursor_row
        old_order = ids(app)
        clock.t = after.taken_at
        app.apply_snapshot(after)
        await pilot.pause()
        new_order = ids(app)
        assert new_order == qps_order(after, reverse=True)
        assert new_order[0] == 6  # the new, busiest replica goes first...
        assert new_order != [6, *old_order]  # ...and the others moved too
        assert table(app).selected_key == selected  # the cursor followed its replica
        assert table(app).cursor_row == new_order.index(int(selected.rsplit("#", 1)[1]))
        assert table(app).cursor_row != position


# --------------------------------------------------------------------------- palette


async def test_command_palette_lists_our_commands() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, fixtures.two_services())
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"Sort by")

        def prompts() -> list[str]:
            found = app.screen.query_one(CommandList)
            texts = []
            for index in range(found.option_count):
                prompt = found.get_option_at_index(index).prompt
                text = prompt.plain if hasattr(prompt, "plain") else str(prompt)
                texts.append(text.split("\n", 1)[0])  # the name, without the help line
            return texts

        await wait_for(lambda: sum("Sort by" in p for p in prompts()) >= 13, pilot)
        assert {"Sort by QPS", "Sort by TTFT p95", "Sort by SCRAPE"} <= set(prompts())
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, CommandPalette)
        await pilot.press("ctrl+p", *"canary")
        await wait_for(lambda: prompts()[:1] == ["Service: wf-canary"], pilot)
        await pilot.press("enter")
        await pilot.pause()
        assert app.service_name == "wf-canary"


# --------------------------------------------------------------------------- narrow


def column_keys(app: WfdashApp) -> list[str]:
    return [column.key for column in table(app).columns]


async def test_a_narrow_table_keeps_the_figures_and_w_shows_every_column() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await show(pilot, fixtures.troubled())
        core = ["id", "status", "qps", "ttft", "queue", "scrape"]
        assert column_keys(app) == core
        assert table(app).virtual_size.width <= table(app).scrollable_content_region.width
        # A click on a header sorts by the column drawn there, not by the wide layout's.
        await pilot.click(ReplicaTable, offset=(30, 0))  # x 28..43: QPS
        await pilot.pause()
        assert table(app).sort_column == "qps"
        await pilot.press("w")
        await pilot.pause()
        assert len(column_keys(app)) == 14 and table(app).wide
        assert table(app).virtual_size.width > 80  # scrolled sideways with left/right
        await pilot.press("w")
        await pilot.pause()
        assert column_keys(app) == core
    async with make_app().run_test(size=SIZE) as pilot:
        await show(pilot, fixtures.troubled())
        assert len(column_keys(pilot.app)) == 14  # 160 columns: everything fits


async def test_resizing_refits_the_columns() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await show(pilot, fixtures.healthy())
        assert "instance" not in column_keys(app)
        await pilot.resize_terminal(200, 48)
        await pilot.pause()
        assert len(column_keys(app)) == 14
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        keys = column_keys(app)
        assert {"qps", "ttft", "queue", "scrape", "layer"} <= set(keys) and "instance" not in keys


# --------------------------------------------------------------------------- misc


async def test_read_only_shows_in_the_header() -> None:
    app = make_app(read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, fixtures.healthy())
        assert "[LIVE] [READ-ONLY]" in header(app)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, fixtures.healthy())
        assert "READ-ONLY" not in header(app)


async def test_states_in_the_header() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "[CONNECTING]" in header(app)
        await show(pilot, fixtures.unreachable())
        assert "[NO STATUS]" in header(app)
        assert "Could not connect" in plain(app.query_one("#spillover", Static))
        await show(pilot, fixtures.empty())
        assert "[LIVE]" in header(app)
        assert "No SkyServe services" in plain(app.query_one("#spillover", Static))


async def test_plots_follow_a_resize_while_paused() -> None:
    """The plots are redrawn at their widgets' new size, not the old one."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, fixtures.healthy())
        await pilot.press("p")
        for size in ((120, 40), (200, 60)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            await pilot.pause()
            for name in ("#qps-plot", "#ttft-plot"):
                widget = app.query_one(name, PlotView)
                lines = widget.text.plain.split("\n")
                assert (max(map(len, lines)), len(lines)) == tuple(widget.size), (name, size)


async def test_q_quits() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, fixtures.healthy())
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running
    assert app.return_code == 0


def test_fixtures_are_deterministic() -> None:
    """Two independent runs of the pipeline give equal snapshots (no wall clock leaks)."""
    assert fixtures.troubled.__wrapped__() == fixtures.troubled()
    assert fixtures.bitnet.__wrapped__() == fixtures.bitnet()


async def test_snapshots_and_header_ticks_arrive_while_help_and_detail_are_open() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, fixtures.healthy())
        await pilot.press("question_mark")
        await pilot.pause()
        app.apply_snapshot(fixtures.healthy())  # the dashboard below re-renders
        app._tick_header()
        await pilot.press("escape", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ReplicaDetailScreen)
        app.apply_snapshot(fixtures.healthy())
        await pilot.pause()
        assert isinstance(app.screen, ReplicaDetailScreen)


async def test_a_snapshot_from_the_poller_thread_never_blocks_or_fails_at_quit() -> None:
    app = make_app()
    snapshot = fixtures.healthy()
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.to_thread(app._deliver, snapshot)  # hands over without waiting
        await pilot.pause()
        assert app.snapshot is snapshot
    app._deliver(snapshot)  # after quit: the UI loop is gone, and nothing raises
