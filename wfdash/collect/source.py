"""Where service status comes from: the protocol the poller reads through.

Two implementations produce the same SkyServe-0.14-shaped ``serve.status`` records: the
real SkyPilot client (:mod:`wfdash.collect.skypilot_source`) and the embedded sandbox.
The control actions of a later layer extend this protocol; the poller needs only reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class SourceError(Exception):
    """The control plane could not answer. ``str(error)`` is one readable line."""


class StatusSource(Protocol):
    @property
    def description(self) -> str:
        """Where the status comes from, for the header (no secrets), e.g. 'sandbox'."""
        ...

    async def fetch_services(self) -> Sequence[Mapping[str, Any]]:
        """``serve.status``-shaped records of every service; [] when there are none.

        Raises SourceError when the status cannot be read at all.
        """
        ...

    async def fetch_clusters(self) -> Sequence[Mapping[str, Any]]:
        """``sky.status``-shaped records of standalone clusters, each with wfdash's own
        ``endpoint`` key (the serving port's URL, or None). Raises SourceError."""
        ...
