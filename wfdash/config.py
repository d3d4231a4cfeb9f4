"""wfdash's settings: defaults < config file < ``WFDASH_*`` environment < command-line flags.

The config file is TOML (``interval = 5``, ``services = ["bitnet"]``) at
:func:`default_config_path`, or wherever ``$WFDASH_CONFIG`` or ``--config`` point. Every
problem becomes one :class:`ConfigError` line naming where the bad value came from (the
file, the environment variable or the flag) and the key, so ``wfdash`` can print it and
exit 2 instead of showing a traceback.

Secrets never live here: the metrics bearer token is read from the environment variable
that ``metrics_token_env`` names, and a config file holding anything that looks like a
secret is refused.

Imports no textual or rich: ``wfdash --once`` loads the configuration too.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

if TYPE_CHECKING:
    from wfdash.collect.poller import PollerConfig


CONFIG_ENV = "WFDASH_CONFIG"
ENV_PREFIX = "WFDASH_"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Key names that suggest a secret. `*_env` keys are exempt: they hold the NAME of an
# environment variable (metrics_token_env), not its value.
_SECRET_KEY = re.compile(
    r"token|passw(or)?d|secret|api[_-]?key|credential|bearer|private[_-]?key|cookie",
    re.IGNORECASE,
)
# Fields whose value is never echoed in an error: a misplaced token would end up there.
_QUIET_FIELDS = frozenset({"metrics_token_env"})
# Flags whose name is not `--` + the key with dashes.
_FLAG_NAMES = {"services": "--service"}


class ConfigError(Exception):
    """One readable line: which file/env/flag, which key, what is wrong."""


class Config(BaseModel):
    """Every wfdash setting, validated. Build it with :func:`load_config`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    interval: float = Field(2.0, gt=0, le=3600, description="seconds between metric polls")
    status_interval: float = Field(
        6.0, gt=0, le=3600, description="seconds between status reads (the SkyPilot API server)"
    )
    window: float = Field(
        60.0, gt=0, le=86400, description="seconds behind rates and TTFT quantiles"
    )
    history_points: int = Field(
        300, ge=2, le=100_000, description="points kept per series for sparklines and plots"
    )
    # Validated even when left at its default: the shipped themes may be missing.
    theme: str = Field("wfdash-dark", validate_default=True, description="colour theme")
    ascii: bool = Field(False, description="draw with ASCII only (no block or braille glyphs)")
    read_only: bool = Field(False, description="refuse every action that changes a service")
    services: list[str] = Field(
        default_factory=list, description="only these services (empty: every service)"
    )
    state_dir: Path | None = Field(
        None, description="folder of the event database (unset: the platform's state dir)"
    )
    scrape_timeout: float = Field(
        3.0, gt=0, le=300, description="seconds before a replica /metrics scrape is given up"
    )
    scrape_concurrency: int = Field(64, ge=1, le=4096, description="scrapes in flight at once")
    metrics_token_env: str = Field(
        "WFDASH_METRICS_TOKEN",
        description="NAME of the environment variable holding the /metrics bearer token",
    )

    @field_validator("theme")
    @classmethod
    def _known_theme(cls, value: str, info: ValidationInfo) -> str:
        known = (info.context or {}).get("known_themes")
        if known is not None and value not in known:
            names = ", ".join(sorted(known)) or "none"
            raise ValueError(f"unknown theme {value!r} (known: {names})")
        return value

    @field_validator("services")
    @classmethod
    def _service_names(cls, value: list[str]) -> list[str]:
        names = [name.strip() for name in value]
        if not all(names):
            raise ValueError("service names must not be empty")
        return list(dict.fromkeys(names))

    @field_validator("state_dir", mode="before")
    @classmethod
    def _path(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("must not be empty")
            return Path(value).expanduser()
        return value.expanduser() if isinstance(value, Path) else value

    @field_validator("metrics_token_env")
    @classmethod
    def _names_a_variable(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            # Not echoed: someone may have put the token itself here.
            raise ValueError("must be the name of an environment variable, not its value")
        return value

    def poller_config(self) -> PollerConfig:
        from wfdash.collect.poller import PollerConfig

        return PollerConfig(
            metrics_interval=self.interval,
            status_interval=self.status_interval,
            rate_window=self.window,
            history_points=self.history_points,
        )

    def metrics_token(self, env: Mapping[str, str] | None = None) -> str | None:
        """The bearer token for replica ``/metrics``, from ``$<metrics_token_env>``."""
        return (os.environ if env is None else env).get(self.metrics_token_env) or None


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir("wfdash", appauthor=False)) / "config.toml"


def load_config(
    *,
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    known_themes: Collection[str] | None = None,
) -> Config:
    """Defaults, then the config file, then ``WFDASH_*`` variables, then ``overrides``.

    ``path``: the config file (``--config``); else ``$WFDASH_CONFIG``; else
    :func:`default_config_path`. Only the default file may be missing: a file named
    explicitly must exist. ``env`` defaults to ``os.environ``; empty variables count as
    unset. ``overrides`` are the command-line flags by key; ``None`` means "not given".
    ``known_themes`` defaults to the theme files shipped with wfdash.

    Raises :class:`ConfigError` (one line) for any problem.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    sources: dict[str, tuple[str, str]] = {}  # key -> (where it was set, its name there)

    file_path, explicit = _config_file(path, env)
    file_label = f"config {file_path}"
    for key, value in _read_toml(file_path, explicit, file_label).items():
        data[key] = value
        sources[key] = (file_label, key)

    for key in Config.model_fields:
        name = _env_var(key)
        text = env.get(name, "")
        if text.strip():
            data[key] = _from_env(key, name, text)
            sources[key] = (name, "")

    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
            sources[key] = (_flag(key), "")

    if known_themes is None:
        # Imported here: the UI package sits above this module (and may import it);
        # theme_names() itself imports no textual.
        from wfdash.ui.themes import theme_names

        known_themes = theme_names()
    try:
        return Config.model_validate(data, context={"known_themes": frozenset(known_themes)})
    except ValidationError as exc:
        raise ConfigError(_summary(exc, sources)) from None


def _env_var(key: str) -> str:
    return ENV_PREFIX + key.upper()


def _flag(key: str) -> str:
    return _FLAG_NAMES.get(key, "--" + key.replace("_", "-"))


def _config_file(path: Path | None, env: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file and whether it was named explicitly."""
    if path is not None:
        return path.expanduser(), True
    if env.get(CONFIG_ENV, "").strip():
        return Path(env[CONFIG_ENV]).expanduser(), True
    return default_config_path(), False


def _read_toml(path: Path, explicit: bool, label: str) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{label}: no such file") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: not valid TOML: {exc}") from None
    secret = _secret_key(data)
    if secret is not None:
        raise ConfigError(
            f"{label}: {secret}: looks like a secret, and secrets never go in the config "
            "file: put it in an environment variable (the /metrics token goes in "
            "$WFDASH_METRICS_TOKEN, or the variable metrics_token_env names)"
        )
    return data


def _secret_key(value: object, where: str = "") -> str | None:
    """The dotted name of the first key, at any depth, that looks like it holds a secret."""
    if isinstance(value, dict):
        for key, item in value.items():
            dotted = f"{where}.{key}" if where else key
            if _SECRET_KEY.search(key) and not key.lower().endswith("_env"):
                return dotted
            found = _secret_key(item, dotted)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _secret_key(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None


def _from_env(key: str, name: str, text: str) -> object:
    """An environment variable's text as the type of ``key``'s field."""
    kind = Config.model_fields[key].annotation
    text = text.strip()
    if kind is bool:
        word = text.lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ConfigError(f"{name}: not a boolean: {text!r} (use 1/true/yes or 0/false/no)")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{name}: not an integer: {text!r}") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{name}: not a number: {text!r}") from None
    if kind == list[str]:
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def _summary(exc: ValidationError, sources: Mapping[str, tuple[str, str]]) -> str:
    """Every problem on one line, grouped by source: ``config F: a: ...; b: ...``."""
    by_source: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        key = str(loc[0]) if loc else ""
        source, name = sources.get(key, ("default", key))
        name += "".join(f"[{part}]" for part in loc[1:])  # an item of a list: services[1]
        problem = _problem(error, key)
        by_source.setdefault(source, []).append(f"{name}: {problem}" if name else problem)
    return "; ".join(f"{source}: {'; '.join(problems)}" for source, problems in by_source.items())


def _problem(error: ErrorDetails, key: str) -> str:
    """What is wrong, in words, with the value when it is safe and useful to show."""
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, Config.model_fields, n=1)
        return "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    if error["type"] == "value_error":
        # Our validators' messages say what they need; "Value error, " is pydantic's.
        return error["msg"].removeprefix("Value error, ")
    message = error["msg"].replace("Input should be ", "must be ", 1)
    if key in _QUIET_FIELDS:
        return message
    shown = repr(error["input"])
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{message} (got {shown})"


def describe_settings() -> str:
    """Every setting with its environment variable, default and meaning: the epilog of
    ``wfdash --help`` (print it with ``argparse.RawDescriptionHelpFormatter``)."""
    lines = [
        "Settings, each source overriding the one before: defaults; the config file (TOML,",
        "e.g. interval = 5); WFDASH_* environment variables (booleans 1/true/yes or",
        "0/false/no, lists comma-separated); command-line flags. The config file",
        f"(${CONFIG_ENV} or --config name another):",
        f"  {default_config_path()}",
        "",
    ]
    from wfdash.ui.themes import theme_names

    for key, field in Config.model_fields.items():
        default = field.get_default(call_default_factory=True)
        lines.append(f"  {key:<19} {_env_var(key):<26} {_toml(default)}")
        limits = _limits(field.metadata)
        if key == "theme":
            limits = "one of " + ", ".join(theme_names())
        lines.append(f"      {field.description}{f' ({limits})' if limits else ''}")
    return "\n".join(lines)


def _toml(value: object) -> str:
    """A default as it would be written in the config file."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return str(value)


def _limits(metadata: list[Any]) -> str:
    """The bounds of a numeric field, from its ``Field(gt=..., le=...)``."""
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    parts = [
        f"{symbol} {getattr(item, attr):g}"
        for item in metadata
        for attr, symbol in symbols.items()
        if getattr(item, attr, None) is not None
    ]
    return ", ".join(parts)
