"""The errors every control module raises; ``str(error)`` is one readable line."""

from __future__ import annotations


class ActionError(Exception):
    """An action is invalid, impossible or failed. The message is one readable line."""


class ActionCancelled(ActionError):
    """The user cancelled a running action (what had been done stays done: see the log)."""
