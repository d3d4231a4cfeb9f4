"""Fixtures shared by the dashboard's Pilot tests."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest


@pytest.fixture
def ui_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Colours and theme as configured (no NO_COLOR / TEXTUAL_THEME from the caller's
    shell) and event times in UTC, so what the tests read does not depend on the machine."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TEXTUAL_THEME", raising=False)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
