"""The settings' pydantic schema: the authority on what is invalid, and its wording.

Built from :class:`wfdash.config.Config`'s fields (types, defaults, bounds, descriptions),
so the settings are declared once. :func:`wfdash.config.load_config` comes here only when
its fast path declines a value, so a valid configuration never pays for importing
pydantic before the dashboard's first frame.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from functools import cache
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import ErrorDetails

from wfdash.config import (
    SETTING_BOUNDS,
    SETTINGS,
    VALUE_CHECKS,
    Config,
    ConfigError,
    check_state_dir,
    check_theme,
    setting_types,
)

# Fields whose value is never echoed in an error: a misplaced token would end up there.
_QUIET_FIELDS = frozenset({"metrics_token_env"})


def validate(
    data: Mapping[str, object], sources: Mapping[str, tuple[str, str]], known_themes: frozenset[str]
) -> Config:
    """``data`` as a :class:`Config`, or :class:`ConfigError` naming every problem.

    ``sources`` maps a key to where it was set and its name there, for the message.
    """
    try:
        model = config_model().model_validate(data, context={"known_themes": known_themes})
    except ValidationError as exc:
        raise ConfigError(_summary(exc, sources)) from None
    return Config(**{key: getattr(model, key) for key in setting_types()})


@cache
def config_model() -> type[BaseModel]:
    """The pydantic model of :class:`Config`: strict, no unknown keys, the same checks."""
    types = setting_types()
    fields: dict[str, Any] = {}
    for setting in SETTINGS:
        options: dict[str, Any] = {
            "description": setting.metadata["description"],
            # The shipped themes may be missing: the default theme is checked too.
            "validate_default": setting.name == "theme",
            **SETTING_BOUNDS[setting.name],
        }
        if setting.default_factory is dataclasses.MISSING:
            options["default"] = setting.default
        else:
            options["default_factory"] = setting.default_factory
        fields[setting.name] = (types[setting.name], Field(**options))
    validators: dict[str, Any] = {
        f"check_{key}": field_validator(key)(check) for key, check in VALUE_CHECKS.items()
    }
    validators["check_theme"] = field_validator("theme")(_check_known_theme)
    validators["check_state_dir"] = field_validator("state_dir", mode="before")(check_state_dir)
    return create_model(
        "Config",
        __config__=ConfigDict(extra="forbid", frozen=True, strict=True),
        __validators__=validators,
        **fields,
    )


def _check_known_theme(value: str, info: ValidationInfo) -> str:
    return check_theme(value, (info.context or {})["known_themes"])


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
        close = difflib.get_close_matches(key, setting_types(), n=1)
        return "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    if error["type"] == "value_error":
        # Our checks' messages say what they need; "Value error, " is pydantic's.
        return error["msg"].removeprefix("Value error, ")
    message = error["msg"].replace("Input should be ", "must be ", 1)
    if key in _QUIET_FIELDS:
        return message
    shown = repr(error["input"])
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{message} (got {shown})"
