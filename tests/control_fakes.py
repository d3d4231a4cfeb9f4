"""A ControlPlane for the UI's tests: records what it is asked to run, and can be held
mid-action, fail or be cancelled like a slow ``sky launch``.

The real planes have their own tests (tests/test_control_sandbox.py against the sandbox,
tests/test_skypilot_control_contract.py against a SkyPilot API server); this one lets the
UI tests decide exactly when and how an action ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from snapshots import fixtures
from wfdash.collect.store import EventStore
from wfdash.control.actions import Action
from wfdash.control.deploy import DeploymentFiles
from wfdash.control.errors import ActionCancelled, ActionError
from wfdash.control.plan import Plan
from wfdash.control.runner import ActionRunner
from wfdash.ui.flows import Control


class RecordingPlane:
    description = "test plane"

    def __init__(
        self,
        *,
        lines: Sequence[str] = ("request sent", "replicas updating"),
        fail: str | None = None,
        hold: bool = False,
    ) -> None:
        self.lines = lines
        self.fail = fail
        self.hold = hold
        self.release = threading.Event()
        self.executed: list[Action] = []
        self.done = threading.Event()

    def execute(self, plan: Plan, progress: Callable[[str], None], cancel: threading.Event) -> str:
        self.executed.append(plan.action)
        try:
            for line in self.lines:
                progress(line)
            while self.hold and not self.release.wait(0.01):
                if cancel.is_set():
                    raise ActionCancelled("stopped following it: cancelled by the user")
            if self.fail:
                raise ActionError(self.fail)
            return f"{plan.action.kind} applied"
        finally:
            self.done.set()


def control_for(plane: RecordingPlane, store_dir: Path | None = None, **runner: object) -> Control:
    """A connected Control, as cli.run_tui builds it once the plane exists."""
    store = EventStore(store_dir / "events.sqlite3") if store_dir is not None else None
    return Control(
        deploy=DeploymentFiles.default(),
        runner=ActionRunner(plane, store, user="ops", clock=fixtures.clock, **runner),  # type: ignore[arg-type]
        target="sandbox (test)",
    )
