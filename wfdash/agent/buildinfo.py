"""What the replica's setup built: read once from the JSON file setup writes.

The format (docs/agent.md), every key optional::

    {"backend": "bitnet", "model": "tiiuae/Falcon3-7B-Instruct-1.58bit",
     "quant_type": "i2_s", "cache_version": "v1", "cache_hit": false,
     "build_seconds": 312}

`cache_hit` says whether setup found the build cached under `cache_version` (true) or
built it (false); `build_seconds` is how long that step of setup took.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PATH = "~/.wfdash/build-info.json"
_MAX_BYTES = 64 * 1024


class BuildInfoError(ValueError):
    """The build-info file is missing or unreadable; the message is one readable line."""


@dataclass(frozen=True, slots=True)
class BuildInfo:
    backend: str = ""
    model: str = ""
    quant_type: str = ""
    cache_version: str = ""
    cache_hit: bool | None = None
    build_seconds: float | None = None

    def labels(self) -> dict[str, str]:
        """The labels of `wfdash_agent_build_info` (unknown values are empty strings)."""
        cache = "" if self.cache_hit is None else ("hit" if self.cache_hit else "miss")
        seconds = "" if self.build_seconds is None else f"{self.build_seconds:g}"
        return {
            "backend": self.backend,
            "model": self.model,
            "quant_type": self.quant_type,
            "cache_version": self.cache_version,
            "cache": cache,
            "build_seconds": seconds,
        }


def load_build_info(path: str | Path) -> BuildInfo:
    """Read the file setup wrote; BuildInfoError if it is missing or not that format."""
    file = Path(path).expanduser()
    try:
        with file.open("rb") as handle:
            raw = handle.read(_MAX_BYTES + 1)
    except OSError as exc:
        raise BuildInfoError(f"cannot read {file}: {exc.strerror or exc}") from exc
    if len(raw) > _MAX_BYTES:
        raise BuildInfoError(f"{file} is larger than {_MAX_BYTES} bytes")
    try:
        data = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError
        raise BuildInfoError(f"{file} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BuildInfoError(f"{file} must hold a JSON object")
    return BuildInfo(
        backend=_text(data, "backend", file),
        model=_text(data, "model", file),
        quant_type=_text(data, "quant_type", file),
        cache_version=_text(data, "cache_version", file),
        cache_hit=_flag(data, "cache_hit", file),
        build_seconds=_seconds(data, "build_seconds", file),
    )


def _text(data: dict[str, Any], key: str, file: Path) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BuildInfoError(f"{file}: {key!r} must be a string")
    return value


def _flag(data: dict[str, Any], key: str, file: Path) -> bool | None:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise BuildInfoError(f"{file}: {key!r} must be true, false or null")


def _seconds(data: dict[str, Any], key: str, file: Path) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BuildInfoError(f"{file}: {key!r} must be a number of seconds")
    if value < 0:
        raise BuildInfoError(f"{file}: {key!r} must not be negative")
    return float(value)
