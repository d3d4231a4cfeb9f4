"""Service status from the real SkyPilot API server, through the ``sky`` SDK.

``import sky`` costs 1.5–2 s and ~160 MB, so it happens lazily, in a worker thread, on
the first read. The SDK would silently start a local API server when none is
configured; a dashboard must not spawn servers behind the user's back, so wfdash turns
that auto-start off for its own process and says what to do instead
(:mod:`wfdash.collect.sky_errors`, shared with the control path).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from wfdash.collect.sky_errors import call_sky, endpoint_description
from wfdash.collect.source import SourceError

SERVING_PORT = 8080  # the port the inference YAMLs open


class SkyPilotStatusSource:
    """Reads ``sky.serve.status`` like ``sky serve status`` does, errors included."""

    def __init__(self, service_names: Sequence[str] | None = None) -> None:
        self._service_names = list(service_names) if service_names else None

    @property
    def description(self) -> str:
        return endpoint_description()

    async def fetch_services(self) -> Sequence[Mapping[str, Any]]:
        return await asyncio.to_thread(call_sky, self._services, SourceError)

    async def fetch_clusters(self) -> Sequence[Mapping[str, Any]]:
        return await asyncio.to_thread(call_sky, _clusters, SourceError)

    def _services(self) -> Sequence[Mapping[str, Any]]:
        import sky
        from sky import exceptions

        try:
            records: list[dict[str, Any]] = sky.get(sky.serve.status(self._service_names))
            return records or []
        except exceptions.ClusterNotUpError as exc:
            if "No live services" in str(exc):
                return []  # no serve controller yet: no services, not an error
            raise  # e.g. "Failed to connect to serve controller": an error, say it


def _clusters() -> Sequence[Mapping[str, Any]]:
    """``sky status`` records, plus the serving port's URL of each UP cluster."""
    import sky

    records: list[dict[str, Any]] = [dict(r) for r in sky.get(sky.status()) or []]
    for record in records:
        record["endpoint"] = None
        if str(getattr(record.get("status"), "value", record.get("status"))) != "UP":
            continue
        try:
            urls = sky.get(sky.endpoints(record["name"], SERVING_PORT))
        except Exception:  # a cluster without the port open: no metrics, not an error
            continue
        url = next(iter(urls.values()), None) if isinstance(urls, dict) else None
        record["endpoint"] = url if url is None or "://" in url else f"http://{url}"
    return records
