"""SVG snapshots of the dashboard's screens, fed by the deterministic fixtures.

Regenerate with ``pytest snapshots --snapshot-update`` and look at the SVGs before
committing them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from snapshots import fixtures
from wfdash.collect.snapshot import Snapshot
from wfdash.ui.app import WfdashApp

WIDE = (160, 48)
NARROW = (80, 24)
Compare = Callable[..., bool]


def make_app(**options: Any) -> WfdashApp:
    return WfdashApp(make_poller=None, store=None, clock=fixtures.clock, **options)


def feed(snapshot: Snapshot, *keys: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """run_before: deliver the snapshot as the poller would (after the first paint, when
    the widgets have their sizes), then press ``keys``."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, WfdashApp)
        await pilot.pause()
        app.apply_snapshot(snapshot)
        await settle(pilot)
        if keys:
            await pilot.press(*keys)
            # A blinking cursor would be on or off depending on when the screenshot is
            # taken (the filter box exists from the first "/").
            for box in app.query(Input):
                box.cursor_blink = False
            await settle(pilot)

    return run_before


async def settle(pilot: Pilot[Any]) -> None:
    """Let the layout catch up: the table's height follows its rows a frame or two late
    (one pause was not always enough after the filter removed rows)."""
    for _ in range(3):
        await pilot.pause(0.05)


def test_healthy(snap_compare: Compare) -> None:
    assert snap_compare(make_app(), terminal_size=WIDE, run_before=feed(fixtures.healthy()))


def test_troubled(snap_compare: Compare) -> None:
    """Stale replicas (HTTP 500, timeout), NOT_READY, PROVISIONING, a preemption event."""
    assert snap_compare(make_app(), terminal_size=WIDE, run_before=feed(fixtures.troubled()))


def test_bitnet_estimates(snap_compare: Compare) -> None:
    """llama.cpp: QPS unknown (tok/s sparkline instead), TTFT '~… est'."""
    assert snap_compare(make_app(), terminal_size=WIDE, run_before=feed(fixtures.bitnet()))


def test_replica_detail(snap_compare: Compare) -> None:
    """Enter on the second row (replica 2, stale: HTTP 500) opens its detail screen."""
    assert snap_compare(
        make_app(), terminal_size=WIDE, run_before=feed(fixtures.troubled(), "down", "enter")
    )


def test_replica_detail_llamacpp(snap_compare: Compare) -> None:
    assert snap_compare(make_app(), terminal_size=WIDE, run_before=feed(fixtures.bitnet(), "enter"))


def test_help(snap_compare: Compare) -> None:
    assert snap_compare(
        make_app(), terminal_size=WIDE, run_before=feed(fixtures.healthy(), "question_mark")
    )


@pytest.mark.parametrize(
    "theme", ["wfdash-dark", "wfdash-light", "wfdash-colorblind", "wfdash-ansi"]
)
def test_theme(snap_compare: Compare, theme: str) -> None:
    assert snap_compare(
        make_app(theme=theme), terminal_size=WIDE, run_before=feed(fixtures.healthy())
    )


def test_theme_troubled_colorblind(snap_compare: Compare) -> None:
    """Status colours matter most where things go wrong."""
    assert snap_compare(
        make_app(theme="wfdash-colorblind"),
        terminal_size=WIDE,
        run_before=feed(fixtures.troubled()),
    )


def test_narrow(snap_compare: Compare) -> None:
    """80×24: compact layout (no plots), the header keeps the state visible."""
    assert snap_compare(make_app(), terminal_size=NARROW, run_before=feed(fixtures.healthy()))


def test_narrow_troubled(snap_compare: Compare) -> None:
    assert snap_compare(make_app(), terminal_size=NARROW, run_before=feed(fixtures.troubled()))


def test_big_fleet(snap_compare: Compare) -> None:
    """40 replicas: the table scrolls (cursor on the last row) and the panels stay put."""
    assert snap_compare(
        make_app(), terminal_size=WIDE, run_before=feed(fixtures.big_fleet(), "end")
    )


def test_big_fleet_narrow(snap_compare: Compare) -> None:
    assert snap_compare(make_app(), terminal_size=NARROW, run_before=feed(fixtures.big_fleet()))


def test_connecting(snap_compare: Compare) -> None:
    """Before the first snapshot."""
    assert snap_compare(make_app(), terminal_size=WIDE)


def test_empty(snap_compare: Compare) -> None:
    assert snap_compare(make_app(), terminal_size=WIDE, run_before=feed(fixtures.empty()))


def test_unreachable(snap_compare: Compare) -> None:
    assert snap_compare(make_app(), terminal_size=WIDE, run_before=feed(fixtures.unreachable()))


def test_ascii(snap_compare: Compare) -> None:
    assert snap_compare(
        make_app(ascii=True), terminal_size=WIDE, run_before=feed(fixtures.troubled())
    )


def test_filter_active(snap_compare: Compare) -> None:
    """'/' then 'spot': only the burst replicas are left, the input box shows the query."""
    assert snap_compare(
        make_app(),
        terminal_size=WIDE,
        run_before=feed(fixtures.healthy(), "slash", *"spot"),
    )


def test_filter_submitted(snap_compare: Compare) -> None:
    """After enter the table has the focus again and its border shows the filter."""
    assert snap_compare(
        make_app(),
        terminal_size=WIDE,
        run_before=feed(fixtures.troubled(), "slash", *"base", "enter"),
    )


def test_sorted_by_qps_reversed(snap_compare: Compare) -> None:
    assert snap_compare(
        make_app(), terminal_size=WIDE, run_before=feed(fixtures.healthy(), "6", "6")
    )


def test_paused_read_only(snap_compare: Compare) -> None:
    """Header: [PAUSED] [READ-ONLY]; the pause notification is showing."""
    assert snap_compare(
        make_app(read_only=True), terminal_size=WIDE, run_before=feed(fixtures.healthy(), "p")
    )


def test_second_service(snap_compare: Compare) -> None:
    assert snap_compare(
        make_app(),
        terminal_size=WIDE,
        run_before=feed(fixtures.two_services(), "right_square_bracket"),
    )


def test_narrow_unreachable(snap_compare: Compare) -> None:
    assert snap_compare(make_app(), terminal_size=NARROW, run_before=feed(fixtures.unreachable()))
