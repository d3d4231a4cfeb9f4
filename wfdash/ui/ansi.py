"""Colour-only ANSI text (what plotext prints) to rich Text, fast.

rich's ``Text.from_ansi`` is a general terminal-stream decoder (cursor moves, OSC links,
every SGR attribute) and took ~60% of a plot redraw: ~11 ms for one 78×18 plot, where
plotext writes ~1000 colour codes. This decoder handles the SGR subset plotext emits
(reset, bold/dim/italic/underline/reverse, 16/256/true colours) with one regex split and
a style cache, and hands anything else to rich, so its result is always rich's result
(tests/test_ansi.py checks that against ``Text.from_ansi``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from rich.color import Color
from rich.style import Style
from rich.text import Span, Text

_SGR = re.compile(r"\x1b\[([0-9;]*)m")
# Other escapes, and the control characters rich drops from text (spans would shift).
_OTHER_CONTROLS = re.compile(r"[\x1b\x07\x08\x0b\x0c\r]")

# (foreground, background, bold, dim, italic, underline, reverse), each None until a
# code sets it: rich keeps "set to default" / "turned off" apart from "never set".
_State = tuple[
    Color | None, Color | None, bool | None, bool | None, bool | None, bool | None, bool | None
]
_RESET: _State = (None, None, None, None, None, None, None)
_FLAG_ON = {1: 2, 2: 3, 3: 4, 4: 5, 7: 6}
_FLAG_OFF = {22: (2, 3), 23: (4,), 24: (5,), 27: (6,)}


class _Unsupported(Exception):
    """A code this decoder does not know: rich decodes the whole string instead."""


def ansi_text(ansi: str, style: Style | str = "") -> Text:
    """``Text.from_ansi(ansi, style=style, end="")``, for colour-only SGR text."""
    if _OTHER_CONTROLS.search(_SGR.sub("", ansi)):
        return Text.from_ansi(ansi, style=style, end="")
    chunks: list[str] = []
    spans: list[Span] = []
    position = 0
    state = _RESET
    try:
        for index, part in enumerate(_SGR.split(ansi)):
            if index % 2:
                state = _apply(state, part)
            elif part:
                part_style = _style(state)
                if part_style:
                    spans.append(Span(position, position + len(part), part_style))
                chunks.append(part)
                position += len(part)
    except _Unsupported:
        return Text.from_ansi(ansi, style=style, end="")
    return Text("".join(chunks), style=style, end="", spans=spans)


@lru_cache(maxsize=256)
def _apply(state: _State, params: str) -> _State:
    """The state after one ``ESC [ params m``."""
    values = [int(p) if p else 0 for p in params.split(";")] if params else [0]
    fields: list[Color | bool | None] = list(state)
    i = 0
    while i < len(values):
        code = values[i]
        i += 1
        if code == 0:
            fields = list(_RESET)
        elif code in _FLAG_ON:
            fields[_FLAG_ON[code]] = True
        elif code in _FLAG_OFF:
            for slot in _FLAG_OFF[code]:
                fields[slot] = False
        elif 30 <= code <= 37 or 90 <= code <= 97:
            fields[0] = Color.from_ansi(code - 30 if code < 90 else code - 82)
        elif 40 <= code <= 47 or 100 <= code <= 107:
            fields[1] = Color.from_ansi(code - 40 if code < 100 else code - 92)
        elif code in (39, 49):
            fields[0 if code == 39 else 1] = Color.default()
        elif code in (38, 48):
            color, i = _extended(values, i)
            fields[0 if code == 38 else 1] = color
        else:
            raise _Unsupported(code)
    return tuple(fields)  # type: ignore[return-value]


def _extended(values: list[int], i: int) -> tuple[Color, int]:
    """``5;n`` or ``2;r;g;b`` after a 38/48; the colour and the index after it."""
    if i < len(values) and values[i] == 5 and i + 1 < len(values) and values[i + 1] < 256:
        return Color.from_ansi(values[i + 1]), i + 2
    if i < len(values) and values[i] == 2 and i + 3 < len(values):
        r, g, b = values[i + 1 : i + 4]
        if max(r, g, b) < 256:
            return Color.from_rgb(r, g, b), i + 4
    raise _Unsupported(values)


@lru_cache(maxsize=256)
def _style(state: _State) -> Style | str:
    if state == _RESET:
        return ""
    fg, bg, bold, dim, italic, underline, reverse = state
    return Style(
        color=fg,
        bgcolor=bg,
        bold=bold,
        dim=dim,
        italic=italic,
        underline=underline,
        reverse=reverse,
    )
