"""The control-plane protocol every action executes through (SkyPilot or the sandbox)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from wfdash.control.errors import ActionCancelled, ActionError
from wfdash.control.plan import Plan

__all__ = ["ActionCancelled", "ActionError", "ControlPlane"]


class ControlPlane(Protocol):
    @property
    def description(self) -> str:
        """Where actions go, for the audit log and the UI (no secrets), e.g. 'sandbox'."""
        ...

    def execute(self, plan: Plan, progress: Callable[[str], None], cancel: threading.Event) -> str:
        """Carry out ``plan``; blocks, so call it from a worker thread.

        ``progress`` receives one human line at a time (request logs, phases); ``cancel``
        set means the user asked to stop. Returns a one-line result; raises ActionError
        (one line) on failure, ActionCancelled when stopped.
        """
        ...
