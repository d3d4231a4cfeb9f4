"""Screenshots must not depend on the machine: no NO_COLOR/TEXTUAL_THEME, UTC time."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _deterministic_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TEXTUAL_THEME", raising=False)
    monkeypatch.setenv("TZ", "UTC")  # event times are rendered with time.localtime
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
