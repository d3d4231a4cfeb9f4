"""wfdash's themes: TOML files in ``themes/``, validated, turned into Textual themes.

One file per theme (see ``themes/wfdash-dark.toml`` for the format and the meaning of
every variable). Each file must define every Textual colour and every wfdash variable,
so switching themes never leaves a colour from the previous one behind, and a typo is
reported with the file and key instead of surfacing as a CSS error at startup.

``THEMES_DIR`` and :func:`theme_names` import no Textual: the configuration validates
``theme`` with them, also for ``--once`` runs that never start the UI (``import textual``
costs ~0.25 s). Textual is imported by the functions that build themes.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.theme import Theme


def _themes_dir() -> Path:
    """Installed package data first (the wheel force-includes ``themes/`` as
    ``wfdash/themes``), then the source checkout's top-level ``themes/``."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "themes"
    return installed if installed.is_dir() else package.parent / "themes"


THEMES_DIR: Path = _themes_dir()
DEFAULT_THEME = "wfdash-dark"

WFDASH_VARIABLES: tuple[str, ...] = (
    "status-ready",
    "status-launching",
    "status-not-ready",
    "status-failed",
    "status-preempted",
    "layer-base",
    "layer-burst",
    "stale",
    "plot-qps",
    "plot-ttft-p50",
    "plot-ttft-p95",
    "plot-target",
    "sparkline",
)

# Textual's Theme fields, all required in a wfdash theme file.
THEME_COLOURS: tuple[str, ...] = (
    "primary",
    "secondary",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
    "warning",
    "error",
    "success",
)
# Textual's widgets' CSS names these, but only its truecolour colour system defines them:
# an `ansi = true` theme must (a CSS error on switching to it otherwise).
_ANSI_VARIABLES = ("ansi-background", "ansi-foreground")
_OPTIONAL_FLOATS = ("luminosity_spread", "text_alpha")
_KNOWN_KEYS = frozenset({"name", "dark", "ansi", "variables", *THEME_COLOURS, *_OPTIONAL_FLOATS})


class ThemeError(Exception):
    """A theme file that cannot be used: one line naming the file and the key."""


def theme_names(folder: Path | None = None) -> list[str]:
    """The names of the themes in ``folder`` (file names; :func:`load_themes` checks
    that each file's ``name`` matches). Empty when the folder does not exist."""
    folder = THEMES_DIR if folder is None else folder
    if not folder.is_dir():
        return []
    return sorted(path.stem for path in folder.glob("*.toml"))


def load_themes(folder: Path | None = None) -> dict[str, Theme]:
    """Every theme in ``folder`` (default :data:`THEMES_DIR`), by name.

    Raises :class:`ThemeError` for a missing folder or the first bad file.
    """
    folder = THEMES_DIR if folder is None else folder
    if not folder.is_dir():
        raise ThemeError(f"themes folder {folder}: not found")
    themes = {}
    for path in sorted(folder.glob("*.toml")):
        theme = load_theme_file(path)
        themes[theme.name] = theme
    if not themes:
        raise ThemeError(f"themes folder {folder}: no *.toml theme files")
    return themes


def load_theme_file(path: Path) -> Theme:
    """One theme file, validated: every required key, every colour parseable."""
    from textual.theme import Theme

    where = f"theme file {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ThemeError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ThemeError(f"{where}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ThemeError(f"{where}: not valid TOML: {exc}") from None

    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise ThemeError(f"{where}: {unknown[0]}: unknown key")
    name = _require(data, "name", str, "a string", where)
    if name != path.stem:
        raise ThemeError(f"{where}: name: {name!r} must match the file name {path.stem!r}")
    dark = _require(data, "dark", bool, "true or false", where)
    options: dict[str, Any] = {
        key: _colour(_require(data, key, str, "a colour string", where), key, where)
        for key in THEME_COLOURS
    }
    if "ansi" in data:
        options["ansi"] = _require(data, "ansi", bool, "true or false", where)
    for key in _OPTIONAL_FLOATS:
        if key in data:
            options[key] = float(_require(data, key, (int, float), "a number", where))
    variables = _require(data, "variables", dict, "a table", where)
    for key, value in variables.items():
        if not isinstance(value, str):
            raise ThemeError(f"{where}: variables.{key}: must be a string (got {value!r})")
    required = WFDASH_VARIABLES + (_ANSI_VARIABLES if options.get("ansi") else ())
    for key in required:
        if key not in variables:
            raise ThemeError(f"{where}: variables.{key}: missing")
        _colour(variables[key], f"variables.{key}", where)
    return Theme(name=name, dark=dark, variables=variables, **options)


def _require(
    data: dict[str, Any], key: str, kind: type | tuple[type, ...], expected: str, where: str
) -> Any:
    if key not in data:
        raise ThemeError(f"{where}: {key}: missing")
    value = data[key]
    # bool is an int: `text_alpha = true` must not pass as a number.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ThemeError(f"{where}: {key}: must be {expected} (got {value!r})")
    return value


def _colour(value: str, key: str, where: str) -> str:
    from textual.color import Color, ColorParseError

    try:
        Color.parse(value)
    except ColorParseError as exc:
        raise ThemeError(f"{where}: {key}: not a colour: {exc}") from None
    return value


@cache
def _default_variables() -> dict[str, str]:
    variables = load_theme_file(THEMES_DIR / f"{DEFAULT_THEME}.toml").variables
    return {key: variables[key] for key in WFDASH_VARIABLES}


def variable_defaults() -> dict[str, str]:
    """wfdash's variables as the default theme sets them, for
    ``App.get_theme_variable_defaults()``: the app's CSS names them, so they must exist
    for every theme, Textual's built-in ones (command palette) included. Cached: Textual
    asks on every CSS refresh."""
    return dict(_default_variables())


def rich_color(value: str) -> str:
    """A theme colour in Rich's style syntax, for Rich ``Text`` styles.

    Rich does not know Textual's ``ansi_*`` names: ``"ansi_green"`` becomes
    ``"color(2)"`` (still the terminal's own green), ``"ansi_default"`` and
    ``"transparent"`` (what an ANSI theme's surface and panel become) become
    ``"default"``; hex colours stay hex (any alpha is dropped).
    """
    from textual.color import Color

    colour = Color.parse(value)
    return "default" if colour.a == 0 and colour.ansi is None else colour.rich_color.name
