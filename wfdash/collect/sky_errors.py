"""Calling the ``sky`` SDK the way wfdash must: no spawned servers, no telemetry, and
every failure as one readable line, in the terms ``sky serve status`` uses.

Shared by the read path (:mod:`wfdash.collect.skypilot_source`) and the control path
(:mod:`wfdash.control.skypilot_plane`). ``sky`` is imported inside the calls only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TypeVar

from wfdash.collect.redact import redact_text

DISABLE_AUTOSTART = "SKYPILOT_DISABLE_LOCAL_API_SERVER"
ENDPOINT_ENV = "SKYPILOT_API_SERVER_ENDPOINT"
T = TypeVar("T")
E = TypeVar("E", bound=Exception)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # SkyPilot colours some error messages


def prepare_environment() -> None:
    """Before any SDK call: no silent local API server, no usage telemetry.

    The SDK would start a local API server when none is configured; a dashboard must not
    spawn servers behind the user's back. Every SDK call would also send usage telemetry
    to a third party (set SKYPILOT_DISABLE_USAGE_COLLECTION=0 yourself to opt back in).
    """
    os.environ.setdefault(DISABLE_AUTOSTART, "1")
    os.environ.setdefault("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")


def call_sky(call: Callable[[], T], error: type[E]) -> T:
    """Run SDK work, turning every failure into ``error`` with one readable line.

    Exceptions that already are ``error`` (raised by ``call`` itself) pass through.
    """
    prepare_environment()
    try:
        import requests
        from sky import exceptions
    except ImportError as exc:  # pragma: no cover - skypilot is a dependency
        raise error(f"the skypilot package is not importable: {exc}") from exc
    try:
        return call()
    except error:
        raise
    except (
        exceptions.ApiServerConnectionError,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
    ) as exc:
        raise error(f"SkyPilot API server unreachable: {first_line(exc)}") from exc
    except RuntimeError as exc:
        text = str(exc)
        if DISABLE_AUTOSTART in text:
            raise error(
                "no SkyPilot API server is running and wfdash does not start one: run "
                f"`sky api start`, or set {ENDPOINT_ENV} (or try `wfdash demo`)"
            ) from exc
        if "network error" in text:
            raise error(
                "SkyPilot could not refresh service status: the API server's own network "
                "check failed (no internet from the API server host?)"
            ) from exc
        raise error(first_line(exc)) from exc
    except Exception as exc:
        raise error(f"{type(exc).__name__}: {first_line(exc)}") from exc


def endpoint_description() -> str:
    """'skypilot <endpoint>' (credentials removed), or 'skypilot' when none is set."""
    endpoint = os.environ.get(ENDPOINT_ENV)
    return f"skypilot {redact_url(endpoint)}" if endpoint else "skypilot"


def redact_url(url: str) -> str:
    """An endpoint URL without inline basic-auth credentials."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def first_line(exc: BaseException) -> str:
    """The exception's first line, uncoloured and redacted (at most 300 characters)."""
    text = strip_ansi(str(exc)).strip()
    return redact_text(text.splitlines()[0] if text else type(exc).__name__)[:300]
