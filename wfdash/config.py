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

import dataclasses
import operator
import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

import platformdirs

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
# Flags whose name is not `--` + the key with dashes.
_FLAG_NAMES = {"services": "--service"}
# The bounds a numeric setting may have, as pydantic's Field() names them.
BOUND_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_BOUND_TESTS = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


class ConfigError(Exception):
    """One readable line: which file/env/flag, which key, what is wrong."""


def _about(description: str, **bounds: float) -> dict[str, Any]:
    """A setting's metadata: what ``--help`` says about it, and its numeric bounds."""
    return {"description": description, "bounds": bounds}


@dataclass(frozen=True)
class Config:
    """Every wfdash setting, validated. Build it with :func:`load_config`.

    A plain dataclass, not a pydantic model: the dashboard reads its settings before the
    first frame, and a valid configuration is checked without importing pydantic (~0.1 s
    of start-up). Pydantic stays the authority on what is invalid and how to say so:
    :mod:`wfdash.config_schema` builds its model from these fields.
    """

    interval: float = field(
        default=2.0, metadata=_about("seconds between metric polls", gt=0, le=3600)
    )
    status_interval: float = field(
        default=6.0,
        metadata=_about("seconds between status reads (the SkyPilot API server)", gt=0, le=3600),
    )
    window: float = field(
        default=60.0, metadata=_about("seconds behind rates and TTFT quantiles", gt=0, le=86400)
    )
    history_points: int = field(
        default=300,
        metadata=_about("points kept per series for sparklines and plots", ge=2, le=100_000),
    )
    # Checked even when left at its default: the shipped themes may be missing.
    theme: str = field(default="wfdash-dark", metadata=_about("colour theme"))
    ascii: bool = field(
        default=False, metadata=_about("draw with ASCII only (no block or braille glyphs)")
    )
    read_only: bool = field(
        default=False, metadata=_about("refuse every action that changes a service")
    )
    services: list[str] = field(
        default_factory=list, metadata=_about("only these services (empty: every service)")
    )
    state_dir: Path | None = field(
        default=None,
        metadata=_about("folder of the event database (unset: the platform's state dir)"),
    )
    scrape_timeout: float = field(
        default=3.0,
        metadata=_about("seconds before a replica /metrics scrape is given up", gt=0, le=300),
    )
    scrape_concurrency: int = field(
        default=64, metadata=_about("scrapes in flight at once", ge=1, le=4096)
    )
    metrics_token_env: str = field(
        default="WFDASH_METRICS_TOKEN",
        metadata=_about("NAME of the environment variable holding the /metrics bearer token"),
    )

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


SETTINGS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(Config)
SETTING_BOUNDS: dict[str, dict[str, float]] = {s.name: s.metadata["bounds"] for s in SETTINGS}


@cache
def setting_types() -> dict[str, Any]:
    """Each setting's type (the annotations are strings until resolved)."""
    return get_type_hints(Config)


def default_of(setting: dataclasses.Field[Any]) -> Any:
    if setting.default_factory is not dataclasses.MISSING:
        return setting.default_factory()
    return setting.default


# ----------------------------------------------------------------- checks beyond the type
# Shared by the fast path below and the pydantic schema, so both say the same.


def check_theme(value: str, known_themes: Collection[str]) -> str:
    if value not in known_themes:
        names = ", ".join(sorted(known_themes)) or "none"
        raise ValueError(f"unknown theme {value!r} (known: {names})")
    return value


def check_service_names(value: list[str]) -> list[str]:
    names = [name.strip() for name in value]
    if not all(names):
        raise ValueError("service names must not be empty")
    return list(dict.fromkeys(names))


def check_state_dir(value: object) -> object:
    """Text becomes a path (``~`` expanded); anything else is left to the type check."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty")
        return Path(value).expanduser()
    return value.expanduser() if isinstance(value, Path) else value


def check_variable_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        # Not echoed: someone may have put the token itself here.
        raise ValueError("must be the name of an environment variable, not its value")
    return value


# Checks that run on a value of the right type (state_dir's runs before the type check).
VALUE_CHECKS: dict[str, Callable[[Any], Any]] = {
    "services": check_service_names,
    "metrics_token_env": check_variable_name,
}


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

    for key in setting_types():
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
    known = frozenset(known_themes)
    config = plainly_valid(data, known)
    if config is not None:
        return config
    # Something is wrong, or unusual enough to need the full rules: pydantic decides,
    # and words every problem.
    from wfdash.config_schema import validate

    return validate(data, sources, known)


def plainly_valid(data: Mapping[str, object], known_themes: Collection[str]) -> Config | None:
    """``data`` as a :class:`Config` when every value is plainly valid, else ``None``.

    The fast path of :func:`load_config`. It accepts a subset of what the pydantic schema
    accepts (values of exactly the right type, within bounds, passing the same checks) and
    gives the same result; anything else, right or wrong, is left to the schema, which
    also writes the error messages. ``tests/test_config.py`` checks both promises.
    """
    types = setting_types()
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in types:
            return None
        try:
            values[key] = _plain_value(key, types[key], value)
        except ValueError:
            return None
    try:
        check_theme(values.get("theme", Config.theme), known_themes)
    except ValueError:
        return None
    return Config(**values)


def _plain_value(key: str, kind: object, value: object) -> object:
    """``value`` as setting ``key`` holds it; ValueError unless plainly valid."""
    if kind is bool or kind is str:
        if type(value) is not kind:
            raise ValueError(key)
    elif kind is int or kind is float:
        # Strict, as the schema is: no bools, no numeric strings; an int may be a float.
        if type(value) is not int and not (kind is float and type(value) is float):
            raise ValueError(key)
        if not _within(value, SETTING_BOUNDS[key]):  # before float(): 10**400 overflows
            raise ValueError(key)
        value = kind(value)
    elif key == "services":
        if type(value) is not list or any(type(item) is not str for item in value):
            raise ValueError(key)
    elif key == "state_dir":
        if value is not None:
            value = check_state_dir(value)
            if not isinstance(value, Path):
                raise ValueError(key)
    else:  # a setting this fast path has not learned: the schema decides
        raise ValueError(key)
    check = VALUE_CHECKS.get(key)
    return value if check is None else check(value)


def _within(value: float | int, bounds: Mapping[str, float]) -> bool:
    # NaN is never within bounds: every numeric setting has an upper one.
    return all(_BOUND_TESTS[name](value, limit) for name, limit in bounds.items())


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
    kind = setting_types()[key]
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

    for setting in SETTINGS:
        key = setting.name
        lines.append(f"  {key:<19} {_env_var(key):<26} {_toml(default_of(setting))}")
        limits = ", ".join(
            f"{BOUND_SYMBOLS[name]} {limit:g}" for name, limit in SETTING_BOUNDS[key].items()
        )
        if key == "theme":
            limits = "one of " + ", ".join(theme_names())
        description = setting.metadata["description"]
        lines.append(f"      {description}{f' ({limits})' if limits else ''}")
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
