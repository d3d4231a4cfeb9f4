"""The theme files: complete, parseable, readable, colour-blind safe, usable by Textual."""

from __future__ import annotations

import itertools
import math
import tomllib
from pathlib import Path

import pytest
from rich.style import Style
from textual.app import App, ComposeResult
from textual.color import Color
from textual.theme import Theme
from textual.widgets import Static

from wfdash.ui.themes import (
    DEFAULT_THEME,
    THEME_COLOURS,
    THEMES_DIR,
    WFDASH_VARIABLES,
    ThemeError,
    load_theme_file,
    load_themes,
    rich_color,
    theme_names,
    variable_defaults,
)

ROOT = Path(__file__).resolve().parents[1]
NAMES = theme_names()
REQUIRED = {"wfdash-dark", "wfdash-light", "wfdash-colorblind", "wfdash-ansi"}


def _theme(name: str) -> Theme:
    return load_theme_file(THEMES_DIR / f"{name}.toml")


def _colours(theme: Theme) -> dict[str, str]:
    colours = {key: getattr(theme, key) for key in THEME_COLOURS}
    colours.update({key: theme.variables[key] for key in WFDASH_VARIABLES})
    return colours


def test_the_shipped_themes_are_there() -> None:
    assert THEMES_DIR == ROOT / "themes"  # the source checkout (an editable install)
    assert set(NAMES) >= REQUIRED
    assert set(load_themes()) == set(NAMES)


def test_the_wheel_ships_the_themes_where_the_loader_looks_first() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    force_include = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert force_include["themes"] == "wfdash/themes"


@pytest.mark.parametrize("name", NAMES)
def test_every_theme_defines_every_colour_and_variable(name: str) -> None:
    theme = _theme(name)
    assert theme.name == name
    for key, value in _colours(theme).items():
        assert value, key
        Color.parse(value)  # raises on anything Textual cannot use


@pytest.mark.parametrize("name", NAMES)
def test_every_wfdash_variable_is_usable_as_a_rich_style(name: str) -> None:
    # Panels and tables colour Rich Text with these: Rich must parse them too.
    for key in WFDASH_VARIABLES:
        Style.parse(rich_color(_theme(name).variables[key]))


def test_rich_color_keeps_the_terminal_palette() -> None:
    assert rich_color("ansi_green") == "color(2)"
    assert rich_color("ansi_bright_black") == "color(8)"
    assert rich_color("ansi_default") == "default"
    assert rich_color("transparent") == "default"
    assert rich_color("#3FB950") == "#3fb950"


def test_the_wfdash_dark_header_documents_every_variable() -> None:
    header = (THEMES_DIR / "wfdash-dark.toml").read_text().split("\nname = ")[0]
    for key in WFDASH_VARIABLES:
        assert f"#   {key} " in header, key


def test_variable_defaults_are_the_default_themes() -> None:
    defaults = variable_defaults()
    assert set(defaults) == set(WFDASH_VARIABLES)
    assert defaults == {key: _theme(DEFAULT_THEME).variables[key] for key in WFDASH_VARIABLES}
    defaults.clear()  # a copy: the cached one is untouched
    assert set(variable_defaults()) == set(WFDASH_VARIABLES)


def test_the_ansi_theme_uses_only_the_terminals_palette() -> None:
    theme = _theme("wfdash-ansi")
    assert theme.ansi  # Textual then emits ANSI colours instead of converting them
    for key, value in _colours(theme).items():
        assert Color.parse(value).ansi is not None, (key, value)


# ------------------------------------------------------------------ legibility


def _linear(channel: int) -> float:
    c = channel / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _luminance(colour: str) -> float:
    r, g, b = (_linear(c) for c in Color.parse(colour).rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: str, b: str) -> float:
    """WCAG contrast ratio."""
    la, lb = sorted(_luminance(x) for x in (a, b))
    return (lb + 0.05) / (la + 0.05)


@pytest.mark.parametrize("name", [n for n in NAMES if not _theme(n).ansi])
def test_wfdash_colours_are_legible_on_the_background(name: str) -> None:
    theme = _theme(name)
    assert theme.background is not None and theme.foreground is not None
    for key in WFDASH_VARIABLES:
        ratio = _contrast(theme.variables[key], theme.background)
        # Stale numbers are dimmed on purpose, but must stay readable.
        assert ratio >= (2.5 if key == "stale" else 3.0), (key, round(ratio, 2))
    stale = _contrast(theme.variables["stale"], theme.background)
    assert stale < _contrast(theme.foreground, theme.background)


# Machado, Oliveira & Fernandes (2009), severity 1.0, applied to linear RGB.
DICHROMACY = {
    "protanopia": (
        (0.152286, 1.052583, -0.204868),
        (0.114503, 0.786281, 0.099216),
        (-0.003882, -0.048116, 1.051998),
    ),
    "deuteranopia": (
        (0.367322, 0.860646, -0.227968),
        (0.280085, 0.672501, 0.047413),
        (-0.011820, 0.042940, 0.968881),
    ),
    "tritanopia": (
        (1.255528, -0.076749, -0.178779),
        (-0.078411, 0.930809, 0.147602),
        (0.004733, 0.691367, 0.303900),
    ),
}
NORMAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _lab(colour: str, matrix: tuple[tuple[float, float, float], ...]) -> tuple[float, ...]:
    """CIELAB of ``colour`` as seen through ``matrix`` (a colour vision simulation)."""
    linear = [_linear(c) for c in Color.parse(colour).rgb]
    r, g, b = (
        min(1.0, max(0.0, sum(m * c for m, c in zip(row, linear, strict=True)))) for row in matrix
    )
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116

    return (116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z)))


def _delta_e(a: str, b: str, matrix: tuple[tuple[float, float, float], ...]) -> float:
    return math.dist(_lab(a, matrix), _lab(b, matrix))


def test_the_simulation_confuses_what_dichromats_confuse() -> None:
    # A red and a green of similar lightness: far apart for normal vision, close for
    # a deuteranope. Guards the simulation the next test relies on.
    red, green = "#C0504D", "#7F8C3A"
    assert _delta_e(red, green, NORMAL) > 40
    assert _delta_e(red, green, DICHROMACY["deuteranopia"]) < 12


STATES = ("status-ready", "status-not-ready", "status-failed", "status-preempted")


@pytest.mark.parametrize("vision", sorted(DICHROMACY))
def test_colorblind_theme_keeps_the_states_apart(vision: str) -> None:
    variables = _theme("wfdash-colorblind").variables
    for a, b in itertools.combinations(STATES, 2):
        distance = _delta_e(variables[a], variables[b], DICHROMACY[vision])
        assert distance >= 20, (vision, a, b, round(distance, 1))


def test_colorblind_theme_healthy_degraded_down_differ_in_more_than_hue() -> None:
    # Down (failed) is darker than healthy and degraded: it reads even in greyscale.
    variables = _theme("wfdash-colorblind").variables
    failed = variables["status-failed"]
    for other in ("status-ready", "status-not-ready"):
        assert _contrast(variables[other], failed) >= 1.5, other


# ------------------------------------------------------------------ bad files


def _write(folder: Path, text: str, name: str = "wfdash-dark") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


DARK = (ROOT / "themes" / "wfdash-dark.toml").read_text()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (DARK.replace('status-ready = "#3FB950"\n', ""), "variables.status-ready: missing"),
        (DARK.replace('\nboost = "#FFFFFF0A"', ""), "boost: missing"),
        (DARK.replace('error = "#F85149"', 'error = "#F8514"'), "error: not a colour"),
        (DARK.replace('stale = "#6E7681"', 'stale = "gren"'), "did you mean 'green'?"),
        (DARK.replace('stale = "#6E7681"', "stale = 3"), "variables.stale: must be a string"),
        (DARK.replace("dark = true", 'dark = "yes"'), "dark: must be true or false"),
        (DARK.replace('name = "wfdash-dark"', 'name = "other"'), "must match the file name"),
        (DARK.replace("dark = true", "dark = true\ndarkness = 1"), "darkness: unknown key"),
        (DARK.replace("dark = true", "dark = true\ntext_alpha = true"), "must be a number"),
        (DARK + "\n[oops\n", "not valid TOML"),
        (DARK.replace("dark = true", "dark = true\nansi = true"), "ansi-background: missing"),
    ],
)
def test_a_bad_theme_file_is_one_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ThemeError) as caught:
        load_themes(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"theme file {path}: ")
    assert expected in message
    assert "\n" not in message


def test_optional_theme_settings_are_passed_to_textual(tmp_path: Path) -> None:
    _write(tmp_path, DARK.replace("dark = true", "dark = true\nluminosity_spread = 0.2"))
    assert load_themes(tmp_path)["wfdash-dark"].luminosity_spread == 0.2


def test_a_missing_or_empty_themes_folder(tmp_path: Path) -> None:
    assert theme_names(tmp_path / "nowhere") == []
    with pytest.raises(ThemeError, match="not found"):
        load_themes(tmp_path / "nowhere")
    with pytest.raises(ThemeError, match=r"no \*\.toml"):
        load_themes(tmp_path)


# ------------------------------------------------------------------ in a Textual app

CSS = "\n".join(f".v-{key} {{ color: ${key}; }}" for key in WFDASH_VARIABLES)


class ThemedApp(App[None]):
    """What the dashboard does: register the themes in __init__, default the variables."""

    CSS = CSS

    def __init__(self) -> None:
        super().__init__()
        self.themes = load_themes()
        for theme in self.themes.values():
            self.register_theme(theme)
        self.theme = DEFAULT_THEME

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return variable_defaults()

    def compose(self) -> ComposeResult:
        for key in WFDASH_VARIABLES:
            yield Static(key, classes=f"v-{key}")


async def test_an_app_can_switch_to_every_theme() -> None:
    app = ThemedApp()
    async with app.run_test() as pilot:
        for name, theme in app.themes.items():
            app.theme = name
            await pilot.pause()
            variables = app.get_css_variables()
            for key in WFDASH_VARIABLES:
                assert variables[key] == theme.variables[key]
                widget = app.query_one(f".v-{key}", Static)
                assert widget.styles.color == Color.parse(theme.variables[key])
            assert app.native_ansi_color == theme.ansi
        # A built-in Textual theme (command palette) falls back to the defaults.
        app.theme = "textual-light"
        await pilot.pause()
        assert app.get_css_variables()["status-ready"] == variable_defaults()["status-ready"]
