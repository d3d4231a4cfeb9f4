"""Time-series plots for the service panels: plotext 6 draws, rich carries the result.

textual-plotext does not work with plotext 6, so the figure is built here and its ANSI
output turned into a :class:`rich.text.Text` any widget can show.

plotext keeps one process-global figure. :func:`render_plot` serialises its use with a
lock, but anything else touching ``plotext.figure`` would race with it: call it from the
UI (main) thread, which is also where Textual renders. It never reads the clock, so the
same inputs give the same Text (snapshot tests rely on it).

Layout: one header row of our own (title, y label and a legend keyed by colour and
marker) above plotext's frame, so the legend never hides data the way plotext's
in-canvas legend box does. The x axis is seconds before ``now`` ("-5m" … "now"); gaps
(``None``) break lines instead of dropping them to 0.
"""

from __future__ import annotations

import math
import threading
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from rich.color import Color, ColorParseError
from rich.style import Style
from rich.text import Text

from wfdash.ui.ansi import ansi_text

MIN_WIDTH = 20
MIN_HEIGHT = 5
MIN_SPAN_S = 10.0  # the x axis covers at least this much, so one sample is not a wall


@lru_cache(maxsize=1)
def _plt() -> Any:
    """plotext, imported on first use: it costs ~0.14 s, which the first paint must not."""
    import plotext

    return plotext


# plotext's braille marker: 2×4 dots per cell, the finest line it draws.
UNICODE_MARKER = "braille"
UNICODE_KEY = "━"
# One ASCII marker per series, in order, so series stay apart without colour; none of
# them is a frame glyph ('+', '-', '|').
ASCII_MARKERS = "*o#x%@&="
_X_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
_X_LABEL_CELLS = 8  # room one x tick label needs, with a gap
_LOCK = threading.Lock()


def _ascii_box_table() -> dict[int, str]:
    """Box-drawing glyphs (the frame, tick marks) → '-', '|', '+' for ``ascii=True``."""
    table: dict[int, str] = {}
    for code in range(0x2500, 0x2580):
        name = unicodedata.name(chr(code), "")
        if " AND " in name or " ARC " in name or "DIAGONAL" in name:
            table[code] = "+"
        elif "HORIZONTAL" in name or name.endswith((" LEFT", " RIGHT")):
            table[code] = "-"
        else:
            table[code] = "|"
    return table


_ASCII_BOX = _ascii_box_table()


class PlotSeries(NamedTuple):  # not a dataclass: see panels.Palette
    """One line: values at Unix times; ``None`` is a gap. ``color``: Rich's syntax
    ("#rrggbb", "color(2)", "red") or a plotext colour name ("blue+")."""

    label: str
    times: Sequence[float]
    values: Sequence[float | None]
    color: str


Segment = tuple[list[float], list[float]]  # (xs, ys) of a run of samples between gaps


class _Trace(NamedTuple):
    """A series as plotext gets it: runs of finite samples, each drawn as one line."""

    series: PlotSeries
    segments: list[Segment]  # x: Unix times, then seconds relative to now (``_relative``)
    step: bool
    key: str  # its ASCII marker (and legend key) in ascii mode

    def values(self) -> list[float]:
        return [y for _, ys in self.segments for y in ys]


def render_plot(
    series: Sequence[PlotSeries],
    width: int,
    height: int,
    *,
    title: str = "",
    y_label: str = "",
    now: float | None = None,
    ascii: bool = False,
    background: str | None = None,
    foreground: str | None = None,
    y_min: float | None = 0.0,
    step_series: Sequence[PlotSeries] = (),
) -> Text:
    """``series`` as lines and ``step_series`` as steps, in exactly ``height`` rows of
    ``width`` cells (a one-line notice when smaller than 20×5).

    ``now`` is the right edge (default: the newest sample). ``y_min`` is where the y axis
    starts unless data goes lower (None: from the data). Step series (e.g. the
    autoscaler's target replicas) use a right-hand axis when there are lines too.
    ``background``/``foreground`` colour the frame, ticks and header (same syntax as
    :attr:`PlotSeries.color`); without them (or "default") only the data is coloured.
    """
    style = Style(color=_rich_color(foreground), bgcolor=_rich_color(background))
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        notice = "plot too small" if width >= len("plot too small") else "too small"
        return Text(notice[: max(width, 0)], style=style, end="")
    traces = [
        _trace(s, step=index >= len(series), key=ASCII_MARKERS[index % len(ASCII_MARKERS)])
        for index, s in enumerate((*series, *step_series))
    ]
    header = _header(title, y_label, traces, ascii, style, width)
    drawn = [t for t in traces if t.segments]
    if not drawn:
        return _message("no data yet", width, height, header, style)
    right = now if now is not None else max(max(xs) for t in drawn for xs, _ in t.segments)
    drawn = [_relative(t, right) for t in drawn]
    with _LOCK:
        ansi = _build(
            drawn, width, height - (header is not None), ascii, background, foreground, y_min
        )
    if ascii:
        ansi = ansi.translate(_ASCII_BOX)
    body = ansi_text(ansi.rstrip("\n"), style)
    if header is None:
        return body
    return Text.assemble(header, "\n", body, end="")


def _trace(series: PlotSeries, *, step: bool, key: str) -> _Trace:
    """Split at gaps (None, NaN, ±inf). A step trace gets a corner point before each
    change: a value holds until the next sample."""
    segments: list[Segment] = []
    xs: list[float] = []
    ys: list[float] = []
    for t, v in zip(series.times, series.values, strict=False):
        if v is None or not math.isfinite(v):
            if xs:
                segments.append((xs, ys))
                xs, ys = [], []
            continue
        if step and xs and v != ys[-1]:
            xs.append(t)
            ys.append(ys[-1])
        xs.append(t)
        ys.append(v)
    if xs:
        segments.append((xs, ys))
    return _Trace(series, segments, step, key)


def _relative(trace: _Trace, now: float) -> _Trace:
    return trace._replace(segments=[([x - now for x in xs], ys) for xs, ys in trace.segments])


def _build(
    traces: list[_Trace],
    width: int,
    height: int,
    ascii: bool,
    background: str | None,
    foreground: str | None,
    y_min: float | None,
) -> str:
    """Draw the (non-empty, relative-time) traces on plotext's global figure → ANSI text."""
    fig = _plt().figure
    fig.clear()
    _plt().terminal.limit(False, False)  # else plotext clips to the real terminal's size
    fig.plot_size(width, height)
    _apply_theme(fig, background, foreground)

    lines = [t for t in traces if not t.step]
    steps = [t for t in traces if t.step]
    canvas_rows = max(height - 3, 1)  # minus the frame's top and bottom and the x labels
    y_count = canvas_rows // 2 + 1  # a tick every other row
    axes = {"left": _nice_ticks(lines or steps, y_min, y_count)}
    if lines and steps:
        axes["right"] = _nice_ticks(steps, y_min, y_count)
    for side, (positions, labels) in axes.items():
        fig.ruler("y", side).ticks(positions, labels).lim(positions[0], positions[-1])
    span = max(-min(min(xs) for t in traces for xs, _ in t.segments), MIN_SPAN_S)
    x_positions, x_labels = _x_ticks(span, max(2, (width - 8) // _X_LABEL_CELLS))
    fig.ruler("x").ticks(x_positions, x_labels).lim(-span, 0)

    # Thin each run to what the canvas can show: plotext's cost grows with the points.
    label_cells = sum(max(map(len, labels)) for _, labels in axes.values())
    # Braille has 2×4 dots per cell; ASCII one mark, thinned at half a cell to keep its joins.
    dots_x, dots_y = (2, 2) if ascii else (2, 4)
    x_step = span / max((width - label_cells - 2) * dots_x, 1)
    for trace in traces:
        positions, _ = axes["right" if trace.step and lines else "left"]
        y_step = (positions[-1] - positions[0]) / (canvas_rows * dots_y)
        xs, ys, breaks = _join([_thin(sx, sy, -span, x_step, y_step) for sx, sy in trace.segments])
        marker = _plt().marker(
            trace.key if ascii else UNICODE_MARKER,
            pixel=_plt().pixel(_plotext_color(trace.series.color)),
        )
        side = "right" if trace.step and lines else "left"
        signal = fig.signal(xs, ys, marker=marker, yside=side)
        signal.lines().density("full")  # "simple" leaves holes in steep segments
        for index in breaks:
            signal.line(index, False)
        fig.draw(signal)
    return str(fig.build().string())


def _thin(xs: list[float], ys: list[float], x0: float, x_step: float, y_step: float) -> Segment:
    """One point per dot column (its last), or its lowest and highest in time order when
    they are more than a dot apart, and the run's first point: the drawn line is the same,
    with far fewer points."""
    out_x: list[float] = [xs[0]]
    out_y: list[float] = [ys[0]]
    i, n = 0, len(xs)
    while i < n:
        column = (xs[i] - x0) // x_step
        low = high = j = i
        while j < n and (xs[j] - x0) // x_step == column:
            if ys[j] < ys[low]:
                low = j
            elif ys[j] > ys[high]:
                high = j
            j += 1
        keep = sorted({low, high}) if ys[high] - ys[low] > y_step else [j - 1]
        if i == 0 and keep[0] == 0:
            keep = keep[1:]  # already in
        out_x.extend(xs[k] for k in keep)
        out_y.extend(ys[k] for k in keep)
        i = j
    return out_x, out_y


def _join(segments: list[Segment]) -> tuple[list[float], list[float], list[int]]:
    """Runs → one point list and the indices where a new run starts (lines break there)."""
    xs: list[float] = []
    ys: list[float] = []
    breaks: list[int] = []
    for sx, sy in segments:
        if xs:
            breaks.append(len(xs))
        xs.extend(sx)
        ys.extend(sy)
    return xs, ys, breaks


def _apply_theme(fig: Any, background: str | None, foreground: str | None) -> None:
    """Colour the frame, ticks and canvas; with no colours given, leave them uncoloured."""
    if _rich_color(background) is None and _rich_color(foreground) is None:
        fig.theme("colorless")
        return
    name = f"wfdash:{background}:{foreground}"
    _plt().add_theme(
        name,
        canvas=_plotext_color(background),
        text=_plt().pixel(
            foreground=_plotext_color(foreground), background=_plotext_color(background)
        ),
    )
    fig.theme(name)


def _nice_ticks(
    traces: list[_Trace], y_min: float | None, count: int
) -> tuple[list[float], list[str]]:
    """At most about ``count`` ticks at round steps (1, 2, 2.5, 5 × 10ⁿ; whole numbers
    when every value is one, as replica counts are) covering the traces' values."""
    values = [y for t in traces for y in t.values()]
    low, high = min(values), max(values)
    if y_min is not None:
        low = min(low, y_min)
    if high <= low:
        high = low + (abs(low) * 0.1 or 1.0)
    integer = all(float(y).is_integer() for y in values)
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    multiples = (1, 2, 5, 10) if integer and magnitude >= 1 else (1, 2, 2.5, 5, 10)
    step = next(m * magnitude for m in multiples if m * magnitude >= raw * (1 - 1e-9))
    if integer:
        step = max(step, 1.0)
    first = math.floor(low / step + 1e-9) * step
    n = math.ceil((high - first) / step - 1e-9)
    positions = [first + i * step for i in range(n + 1)]
    decimals = next(d for d in range(7) if abs(round(step, d) - step) < step * 1e-6)
    return positions, [_tick_label(p, decimals) for p in positions]


def _tick_label(value: float, decimals: int) -> str:
    if abs(value) >= 10_000 and decimals == 0:
        return f"{value / 1000:g}k"
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text  # no "-0.0"


def _x_ticks(span: float, max_ticks: int) -> tuple[list[float], list[str]]:
    """Ticks at whole seconds/minutes/hours before now, rightmost labelled "now"."""
    step = next((s for s in _X_STEPS_S if span / s <= max_ticks - 1), _X_STEPS_S[-1])
    positions = [-float(k * step) for k in range(int(span // step) + 1)]
    unit, suffix = (1, "s") if step < 60 else (60, "m") if step < 3600 else (3600, "h")
    labels = ["now" if k == 0 else f"-{k * step // unit}{suffix}" for k in range(len(positions))]
    return positions[::-1], labels[::-1]


def _header(
    title: str, y_label: str, traces: list[_Trace], ascii: bool, style: Style, width: int
) -> Text | None:
    """Title, (y label) and a key per labelled series, cropped or padded to ``width``."""
    keyed = [t for t in traces if t.series.label]
    if not (title or y_label or keyed):
        return None
    header = Text(style=style, end="")
    if title:
        header.append(title, Style(bold=True))
    if y_label:
        header.append(f"{'  ' if title else ''}({y_label})")
    for trace in keyed:
        header.append("  " if header.plain else "")
        header.append(
            trace.key if ascii else UNICODE_KEY, Style(color=_rich_color(trace.series.color))
        )
        header.append(f" {trace.series.label}")
    header.truncate(width, overflow="crop", pad=True)
    return header


def _message(text: str, width: int, height: int, header: Text | None, style: Style) -> Text:
    """``text`` centred in a blank ``width``×``height`` block, under the header if any."""
    rows = [Text(" " * width, style=style, end="") for _ in range(height)]
    if header is not None:
        rows[0] = header
    middle = height // 2
    rows[middle] = Text(text[:width].center(width), style=style, end="")
    return Text("\n", end="").join(rows)


def _plotext_color(color: str | None) -> tuple[int, int, int] | int | None:
    """A colour as plotext takes it: RGB, or a palette number (an ANSI theme's colours are
    the terminal's own, and must stay so); None for no or an unknown colour."""
    parsed = _rich_color(color)
    if parsed is None:
        return None
    rgb = parsed.triplet
    return parsed.number if rgb is None else (rgb.red, rgb.green, rgb.blue)


@lru_cache(maxsize=64)
def _rich_color(color: str | None) -> Color | None:
    """Rich's colour syntax ('#rrggbb', 'color(2)', 'red', 'default'), or else a plotext
    colour name ('blue+', 'orange'); None for no, the default or an unknown colour."""
    if not color:
        return None
    try:
        parsed = Color.parse(color)
    except ColorParseError:
        rgb = _plt().pixel(foreground=color).foreground()
        return None if rgb is None else Color.from_rgb(*rgb)
    return None if parsed.is_default else parsed
