"""The dashboard's control flows, driven by keys: form → plan → preview → confirm → run.

The plane is tests/control_fakes.RecordingPlane, so each test decides how the action
ends; the real planes are tested in test_control_sandbox.py and the SkyPilot contract
tests. The screenshots of these screens are in snapshots/test_screens.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Input, Static

from snapshots import fixtures
from tests.control_fakes import RecordingPlane, control_for
from wfdash.collect.kinds import EventKind
from wfdash.control.actions import LaunchReplica, Scale, SwitchBackend, TerminateReplica
from wfdash.ui import flows
from wfdash.ui.app import WfdashApp
from wfdash.ui.control import ActionsScreen, FormScreen, PreviewScreen
from wfdash.ui.flows import Control

SIZE = (160, 48)


@pytest.fixture(autouse=True)
def _quick_debounce(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flows, "PENDING_DEBOUNCE_S", 0.2)


def make_app(control: Control, **options: Any) -> WfdashApp:
    store = control.runner.store if control.runner else None
    return WfdashApp(store=store, clock=fixtures.clock, control=control, **options)


async def show(pilot: Pilot[Any]) -> WfdashApp:
    await pilot.pause()
    app = pilot.app
    assert isinstance(app, WfdashApp)
    app.apply_snapshot(fixtures.healthy())
    await pilot.pause()
    return app


def text_of(app: WfdashApp, selector: str) -> str:
    """A Static's text on the screen on top, else on the dashboard under it."""
    found = app.screen.query(selector) or app.screen_stack[0].query(selector)
    widget = found.first()
    assert isinstance(widget, Static)
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


async def until(pilot: Pilot[Any], condition: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError("condition not met in time")


async def preview_one_more(pilot: Pilot[Any]) -> None:
    """'+' once, then wait for its debounced preview."""
    await pilot.press("plus")
    await until(pilot, lambda: isinstance(pilot.app.screen, PreviewScreen))


# --------------------------------------------------------------------------- +/- keys


async def test_plus_presses_make_one_previewed_scale_and_run_once(tmp_path: Path) -> None:
    plane = RecordingPlane()
    app = make_app(control_for(plane, tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot)
        await pilot.press("plus", "plus")
        summary = text_of(app, "#summary")
        assert "min replicas 3 → 5 pending" in summary
        await until(pilot, lambda: isinstance(app.screen, PreviewScreen))
        assert isinstance(app.screen, PreviewScreen)
        plan = app.screen.plan
        assert plan.action == Scale(
            service="wf-bitnet", min_replicas=5, max_replicas=8, target_qps_per_replica=None
        )
        assert plan.command.startswith("sky serve update wf-bitnet")
        assert "+    min_replicas: 5" in plan.yaml_diff
        assert plane.executed == []  # nothing runs before the confirmation
        await pilot.press("y")
        await until(pilot, plane.done.is_set)
        await pilot.press("y", "y")  # pressed again: no second preview, no second run
        await until(pilot, lambda: "succeeded" in text_of(app, "#actions"))
        assert len(plane.executed) == 1
        assert "scale applied" in text_of(app, "#actions")
        events = [e for e in app._events if e.kind is EventKind.ACTION]
        assert [e.data["outcome"] for e in events][:2] == ["succeeded", "running"]
        assert "ACTION" in text_of(app, "#events")


async def test_escape_drops_a_pending_change() -> None:
    plane = RecordingPlane()
    app = make_app(control_for(plane))
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot)
        await pilot.press("minus", "escape")
        assert "pending" not in text_of(app, "#summary")
        await pilot.pause(0.4)
        assert not isinstance(app.screen, PreviewScreen)
        assert plane.executed == []


async def test_cancelling_the_preview_changes_nothing() -> None:
    plane = RecordingPlane()
    app = make_app(control_for(plane))
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot)
        await preview_one_more(pilot)
        await pilot.press("n")
        await pilot.pause()
        assert not isinstance(app.screen, PreviewScreen)
        assert plane.executed == []
        assert not app.query_one("#actions").display


# --------------------------------------------------------------------------- forms


async def test_scale_form_refuses_impossible_values_and_keeps_them() -> None:
    plane = RecordingPlane()
    app = make_app(control_for(plane))
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot)
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, FormScreen)
        min_box = app.screen.query_one("#field-min_replicas", Input)
        max_box = app.screen.query_one("#field-max_replicas", Input)
        assert (min_box.value, max_box.value) == ("3", "8")
        min_box.value, max_box.value = "9", "4"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, FormScreen)  # still open, with the reason
        error = text_of(app, "#form-error")
        assert "max" in error and "min" in error
        assert (min_box.value, max_box.value) == ("9", "4")  # nothing typed is lost
        max_box.value = "12"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, PreviewScreen)
        assert app.screen.plan.action == Scale(
            service="wf-bitnet", min_replicas=9, max_replicas=12, target_qps_per_replica=0.5
        )


async def test_backend_switch_defaults_to_the_other_backend() -> None:
    plane = RecordingPlane()
    app = make_app(control_for(plane))
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot)
        await pilot.press("b")
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, PreviewScreen)
        assert app.screen.plan.action == SwitchBackend(
            service="wf-bitnet", backend="bitnet", mode="rolling"
        )
        assert "BACKEND: bitnet" in app.screen.plan.yaml_diff


async def test_launch_picks_a_profile_and_reports_progress() -> None:
    plane = RecordingPlane(lines=("wf-bitnet-1 INIT: Provisioning",), hold=True)
    app = make_app(control_for(plane))
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot)
        await pilot.press("L")
        await pilot.pause()
        await pilot.press("down", "enter", "enter")  # second profile, then the name
        await pilot.pause()
        assert isinstance(app.screen, PreviewScreen)
        assert app.screen.plan.action == LaunchReplica(profile="gcp_h3", cluster_name="wf-bitnet-1")
        assert app.screen.plan.command.startswith("sky launch")
        await pilot.press("y")
        await until(pilot, lambda: "Provisioning" in text_of(app, "#actions"))
        assert "running" in text_of(app, "#actions")
        plane.release.set()
        await until(pilot, lambda: "succeeded" in text_of(app, "#actions"))


async def test_a_failed_action_says_why() -> None:
    plane = RecordingPlane(fail="SkyPilot API server unreachable: connection refused")
    app = make_app(control_for(plane))
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot)
        await preview_one_more(pilot)
        await pilot.press("y")
        await until(pilot, lambda: "failed" in text_of(app, "#actions"))
        assert "connection refused" in text_of(app, "#actions")


async def test_actions_screen_cancels_a_running_action() -> None:
    plane = RecordingPlane(hold=True)
    app = make_app(control_for(plane))
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot)
        await preview_one_more(pilot)
        await pilot.press("y")
        await until(pilot, lambda: bool(plane.executed))
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, ActionsScreen)
        assert "request sent" in text_of(app, "#actions-body")
        await pilot.press("c")
        await until(pilot, lambda: "cancelled" in text_of(app, "#actions-body"))
        await pilot.press("escape")
        await pilot.pause()
        assert "cancelled" in text_of(app, "#actions")


# --------------------------------------------------------------------------- danger


async def test_terminate_wants_the_replica_typed_before_it_runs() -> None:
    plane = RecordingPlane()
    app = make_app(control_for(plane))
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot)
        await pilot.press("down", "T")  # replica 2
        await pilot.pause()
        assert isinstance(app.screen, PreviewScreen)
        plan = app.screen.plan
        assert plan.action == TerminateReplica(service="wf-bitnet", replica_id=2)
        assert plan.danger and plan.confirm_phrase
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, PreviewScreen)
        assert "exactly" in text_of(app, "#preview-error")
        await pilot.press(*"nope")  # letters go to the box: "n" does not cancel here
        assert isinstance(app.screen, PreviewScreen)
        app.screen.query_one("#confirm-phrase", Input).value = plan.confirm_phrase
        await pilot.press("enter")
        await until(pilot, plane.done.is_set)
        assert plane.executed == [plan.action]


# --------------------------------------------------------------------------- read-only


async def test_read_only_mode_blocks_every_change_in_one_place() -> None:
    plane = RecordingPlane()
    app = make_app(control_for(plane, read_only=True), read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot)
        for key in ("plus", "minus", "s", "b", "L", "R", "T", "D"):
            await pilot.press(key)
            await pilot.pause(0.05)
            assert app.screen is app.screen_stack[0], key
        await asyncio.sleep(0.3)
        assert "pending" not in text_of(app, "#summary")
        assert plane.executed == []
        for action in ("scale_step", "scale", "backend", "launch", "rebuild", "terminate", "down"):
            assert app.check_action(action, ()) is None  # greyed in the footer
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Actions and their logs" in titles
        assert not [t for t in titles if t.startswith(("Scale", "Launch", "Down"))]
