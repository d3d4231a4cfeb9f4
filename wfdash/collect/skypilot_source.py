"""Service status from the real SkyPilot API server, through the ``sky`` SDK.

``import sky`` costs 1.5–2 s and ~160 MB, so it happens lazily, in a worker thread, on
the first read. The SDK would silently start a local API server when none is
configured; a dashboard must not spawn servers behind the user's back, so wfdash turns
that auto-start off for its own process and says what to do instead.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from wfdash.collect.redact import redact_text
from wfdash.collect.source import SourceError

_DISABLE_AUTOSTART = "SKYPILOT_DISABLE_LOCAL_API_SERVER"
_ENDPOINT_ENV = "SKYPILOT_API_SERVER_ENDPOINT"
SERVING_PORT = 8080  # the port the inference YAMLs open
T = TypeVar("T")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # SkyPilot colours some error messages


class SkyPilotStatusSource:
    """Reads ``sky.serve.status`` like ``sky serve status`` does, errors included."""

    def __init__(self, service_names: Sequence[str] | None = None) -> None:
        self._service_names = list(service_names) if service_names else None

    @property
    def description(self) -> str:
        endpoint = os.environ.get(_ENDPOINT_ENV)
        return f"skypilot {redact_url(endpoint)}" if endpoint else "skypilot"

    async def fetch_services(self) -> Sequence[Mapping[str, Any]]:
        return await asyncio.to_thread(_call_sky, self._services)

    async def fetch_clusters(self) -> Sequence[Mapping[str, Any]]:
        return await asyncio.to_thread(_call_sky, _clusters)

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


def _call_sky(call: Callable[[], T]) -> T:
    """Run one SDK read, turning every failure into one readable SourceError line."""
    os.environ.setdefault(_DISABLE_AUTOSTART, "1")
    # Every SDK call would otherwise send usage telemetry to a third party: a dashboard
    # polling every few seconds must not (set it to 0 yourself to opt back in).
    os.environ.setdefault("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
    try:
        import requests
        from sky import exceptions
    except ImportError as exc:  # pragma: no cover - skypilot is a dependency
        raise SourceError(f"the skypilot package is not importable: {exc}") from exc
    try:
        return call()
    except (
        exceptions.ApiServerConnectionError,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
    ) as exc:
        raise SourceError(f"SkyPilot API server unreachable: {_first_line(exc)}") from exc
    except RuntimeError as exc:
        text = str(exc)
        if _DISABLE_AUTOSTART in text:
            raise SourceError(
                "no SkyPilot API server is running and wfdash does not start one: run "
                f"`sky api start`, or set {_ENDPOINT_ENV} (or try `wfdash demo`)"
            ) from exc
        if "network error" in text:
            raise SourceError(
                "SkyPilot could not refresh service status: the API server's own network "
                "check failed (no internet from the API server host?)"
            ) from exc
        raise SourceError(_first_line(exc)) from exc
    except Exception as exc:
        raise SourceError(f"{type(exc).__name__}: {_first_line(exc)}") from exc


def redact_url(url: str) -> str:
    """An endpoint URL without inline basic-auth credentials."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def _first_line(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    return redact_text(text.splitlines()[0] if text else type(exc).__name__)[:300]
