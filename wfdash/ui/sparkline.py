"""One-line sparklines for table cells, as plain strings.

Textual's ``Sparkline`` widget scales from the minimum of its data, so a steady 5 QPS
draws as a flat line at the bottom, the same as no traffic. Here the scale starts at a
fixed ``floor`` (0 by default): steady traffic is a full-height bar, no traffic the lowest
glyph, and a missing sample (``None``) a blank. It is a plain function over a string
because it runs for every row of a table of up to 1000 replicas on every refresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import isfinite

UNICODE_GLYPHS = "▁▂▃▄▅▆▇█"
# '_' rather than ' ' for the lowest level so that "zero" stays distinct from a gap.
ASCII_GLYPHS = "_.:-=+*#"


def sparkline(
    values: Sequence[float | None], width: int, *, ascii: bool = False, floor: float = 0.0
) -> str:
    """The newest ``width`` values as exactly ``width`` characters, newest at the right.

    Fewer values than ``width`` are padded with spaces on the left. Levels are scaled from
    ``floor`` to the largest shown value; values at or below ``floor`` get the lowest
    glyph, and any value above it at least the second one, so a little traffic never
    reads as none. ``None`` (or NaN, ±inf) is a gap: a space.
    """
    if width <= 0:
        return ""
    glyphs = ASCII_GLYPHS if ascii else UNICODE_GLYPHS
    shown = values[-width:]
    top = max((v for v in shown if v is not None and isfinite(v)), default=None)
    if top is None:
        return " " * width
    top_level = len(glyphs) - 1
    span = top - floor  # > 0 whenever a value is above the floor
    low = glyphs[0]
    cells = []
    for v in shown:
        if v is None or not isfinite(v):
            cells.append(" ")
        elif v <= floor:
            cells.append(low)
        else:
            level = int((v - floor) / span * top_level + 0.5)
            cells.append(glyphs[1 if level < 1 else level])
    return " " * (width - len(shown)) + "".join(cells)
