"""The main screen's layout: a fleet taller than the terminal scrolls inside the replica
table, and the summary, plots, events and footer stay on screen at every size."""

from __future__ import annotations

import pytest
from textual.widget import Widget

from snapshots import fixtures
from tests.test_ui_keys import make_app, show
from wfdash.ui.replica_table import ReplicaTable


def _bottom(widget: Widget) -> int:
    return widget.region.y + widget.region.height


@pytest.mark.parametrize("size", [(160, 48), (120, 40), (100, 34), (80, 24)])
async def test_a_big_fleet_scrolls_in_the_table_not_the_screen(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await show(pilot, fixtures.big_fleet())
        screen = app.screen
        table = screen.query_one(ReplicaTable)
        assert screen.max_scroll_y == 0
        assert table.max_scroll_y > 0  # 40 rows do not fit: the table scrolls them
        assert table.region.height >= 5
        for selector in ("#summary", "#bottom", "Footer"):
            widget = screen.query_one(selector)
            assert widget.region.height > 0
            assert _bottom(widget) <= size[1], selector
        if not screen.has_class("compact"):
            plots = screen.query_one("#plots")
            assert plots.region.height >= 10
        # No blank band: the bottom panels reach down to the footer.
        assert _bottom(screen.query_one("#bottom")) == screen.query_one("Footer").region.y

        await pilot.press("end")
        assert table.cursor_row == 39
        assert table.scroll_offset.y == table.max_scroll_y  # the last row is in view


async def test_the_filter_box_takes_its_lines_from_the_table() -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await show(pilot, fixtures.big_fleet())
        table = app.screen.query_one(ReplicaTable)
        before = table.region.height
        await pilot.press("slash")
        await pilot.pause()
        assert app.screen.max_scroll_y == 0
        assert table.region.height < before
        assert _bottom(app.screen.query_one("#bottom")) <= 48 - 4  # above the docked box
        await pilot.press("escape")
        await pilot.pause()
        assert table.region.height == before


async def test_a_small_fleet_keeps_its_table_short() -> None:
    """Five replicas: the table is as tall as its rows, the plots get the room."""
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await show(pilot, fixtures.healthy())
        table = app.screen.query_one(ReplicaTable)
        assert table.region.height == 5 + 2  # rows, header, border
        assert app.screen.query_one("#plots").region.height == 20
        bottom = app.screen.query_one("#bottom")
        assert _bottom(bottom) == 47 and bottom.region.height > 9  # the rest, above the footer
