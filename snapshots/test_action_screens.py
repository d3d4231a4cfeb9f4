"""SVG snapshots of the control flows: forms, plan previews, progress, the actions log.

The plane is tests/control_fakes.RecordingPlane (held mid-action where the screenshot
shows a running action), the data the deterministic fixtures.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from snapshots import fixtures
from snapshots.test_screens import WIDE, Compare, settle
from tests.control_fakes import RecordingPlane, control_for
from wfdash.ui import flows
from wfdash.ui.app import WfdashApp
from wfdash.ui.control import PreviewScreen


@pytest.fixture(autouse=True)
def _quick_debounce(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flows, "PENDING_DEBOUNCE_S", 0.1)


def make_app(plane: RecordingPlane | None = None, **options: Any) -> WfdashApp:
    control = control_for(plane or RecordingPlane(hold=True))
    return WfdashApp(make_poller=None, store=None, clock=fixtures.clock, control=control, **options)


def steps(
    *keys: str, fill: dict[str, str] | None = None, then: tuple[str, ...] = ()
) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """Deliver the healthy snapshot, press ``keys``, set form inputs, press ``then``."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, WfdashApp)
        await pilot.pause()
        app.apply_snapshot(fixtures.healthy())
        await settle(pilot)
        await pilot.press(*keys)
        await settle(pilot)
        for selector, value in (fill or {}).items():
            box = app.screen.query_one(selector, Input)
            box.value = value
        for input_box in app.screen.query(Input):
            input_box.cursor_blink = False
        if then:
            await pilot.press(*then)
        for _ in range(50):  # the debounce, or the action's worker reporting back
            await pilot.pause(0.02)
        await settle(pilot)
        for input_box in app.screen.query(Input):
            input_box.cursor_blink = False

    return run_before


def test_scale_pending_preview(snap_compare: Compare) -> None:
    """'+' twice: one Scale plan (min 3→5) with its command, cost change and YAML diff."""
    assert snap_compare(make_app(), terminal_size=WIDE, run_before=steps("plus", "plus"))


def test_scale_form_refuses(snap_compare: Compare) -> None:
    """max < min: the form stays open with SkyServe's rule, the typed values kept."""
    assert snap_compare(
        make_app(),
        terminal_size=WIDE,
        run_before=steps(
            "s",
            fill={"#field-min_replicas": "9", "#field-max_replicas": "4"},
            then=("ctrl+s",),
        ),
    )


def test_backend_form(snap_compare: Compare) -> None:
    assert snap_compare(make_app(), terminal_size=WIDE, run_before=steps("b"))


def test_launch_form(snap_compare: Compare) -> None:
    """The profile picker: instance, price and expected tok/s for each profile."""
    assert snap_compare(make_app(), terminal_size=WIDE, run_before=steps("L"))


def test_rebuild_form(snap_compare: Compare) -> None:
    assert snap_compare(make_app(), terminal_size=WIDE, run_before=steps("R"))


def test_terminate_preview(snap_compare: Compare) -> None:
    """Danger: the replica's id must be typed; enter without it says so."""
    assert snap_compare(
        make_app(), terminal_size=WIDE, run_before=steps("down", "T", then=("enter",))
    )


def test_action_running(snap_compare: Compare) -> None:
    """Confirmed: the progress panel shows the running action and its latest log line."""
    assert snap_compare(
        make_app(RecordingPlane(hold=True, lines=("wf-bitnet: version 2 rolling out",))),
        terminal_size=WIDE,
        run_before=steps("plus", then=("y",)),
    )


def test_actions_screen(snap_compare: Compare) -> None:
    """'a': this session's actions with their commands and streamed logs."""
    assert snap_compare(
        make_app(RecordingPlane(hold=True)),
        terminal_size=WIDE,
        run_before=steps("plus", then=("y", "a")),
    )


def test_preview_is_a_modal(snap_compare: Compare) -> None:
    """The launch preview: what will run, what it costs per hour, the YAML it sends."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await steps("L")(pilot)
        await pilot.press("enter", "enter")
        await settle(pilot)
        assert isinstance(pilot.app.screen, PreviewScreen)

    assert snap_compare(make_app(), terminal_size=WIDE, run_before=run_before)
