"""plotext 6 → rich Text plots: size, gaps, ASCII mode, empty data, determinism."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pytest
from rich.color import Color
from rich.text import Text

from wfdash.ui.plot import ASCII_MARKERS, PlotSeries, render_plot

NOW = 1_700_000_000.0
TIMES = [NOW - 300 + 2 * i for i in range(151)]  # the last five minutes, every 2 s


def _series(
    values: Sequence[float | None], label: str = "qps", color: str = "#4ea1ff"
) -> PlotSeries:
    return PlotSeries(label, TIMES[-len(values) :], values, color)


def _wave(n: int = 151) -> list[float | None]:
    return [2 + math.sin(i / 10) for i in range(n)]


def _rows(text: Text) -> list[str]:
    return text.plain.split("\n")


def _canvas(text: Text) -> list[str]:
    """The rows inside the frame of an ASCII plot with a header row."""
    rows = _rows(text)
    left, right = rows[1].index("+"), rows[1].rindex("+")
    return [row[left + 1 : right] for row in rows[2:-2]]


def _marker_columns(row: str) -> list[int]:
    return [i for i, c in enumerate(row) if c in ASCII_MARKERS]


@pytest.mark.parametrize(("width", "height"), [(20, 5), (60, 12), (61, 13), (120, 30)])
@pytest.mark.parametrize("ascii", [False, True])
@pytest.mark.parametrize("title", ["", "QPS"])
def test_exact_size(width: int, height: int, ascii: bool, title: str) -> None:
    text = render_plot([_series(_wave())], width, height, title=title, now=NOW, ascii=ascii)
    rows = _rows(text)
    assert len(rows) == height
    assert {Text(row).cell_len for row in rows} == {width}


def test_gap_breaks_the_line_instead_of_dropping_to_zero() -> None:
    values: list[float | None] = [5.0] * 151
    values[60:90] = [None] * 30
    canvas = _canvas(render_plot([_series(values)], 60, 12, now=NOW, ascii=True))
    drawn = [row for row in canvas if _marker_columns(row)]
    assert len(drawn) == 1  # one flat line at 5, nothing at 0
    columns = _marker_columns(drawn[0])
    holes = [b - a for a, b in itertools.pairwise(columns) if b - a > 1]
    assert len(holes) == 1
    assert holes[0] > 5  # 60 s of 300 on a ~55-cell canvas: about 11 cells


def test_gap_in_braille_mode() -> None:
    values: list[float | None] = [5.0] * 151
    values[60:90] = [None] * 30
    rows = _rows(render_plot([_series(values)], 60, 12, now=NOW))
    drawn = [row for row in rows if any("\u2800" <= c <= "\u28ff" for c in row)]
    assert len(drawn) == 1
    dots = [i for i, c in enumerate(drawn[0]) if "\u2800" <= c <= "\u28ff"]
    assert max(b - a for a, b in itertools.pairwise(dots)) > 5


def test_nan_is_a_gap_too() -> None:
    with_none: list[float | None] = [5.0] * 151
    with_none[60:90] = [None] * 30
    with_nan: list[float | None] = [math.nan if v is None else v for v in with_none]
    plots = [render_plot([_series(v)], 60, 12, now=NOW, ascii=True) for v in (with_none, with_nan)]
    assert plots[0].plain == plots[1].plain


def test_ascii_mode_is_ascii_only() -> None:
    text = render_plot(
        [_series(_wave(), "qps"), _series([1.0] * 151, "p95", "orange")],
        60,
        12,
        title="QPS",
        y_label="req/s",
        now=NOW,
        ascii=True,
        step_series=[_series([2.0] * 75 + [3.0] * 76, "target", "#888888")],
        foreground="#cccccc",
        background="#101010",
    )
    assert text.plain.isascii()
    assert "* qps" in text.plain and "o p95" in text.plain and "# target" in text.plain


def test_unicode_mode_draws_braille_and_a_frame() -> None:
    plain = render_plot([_series(_wave())], 60, 12, now=NOW).plain
    assert any("\u2800" <= c <= "\u28ff" for c in plain)
    assert "┌" in plain


@pytest.mark.parametrize(
    "series",
    [[], [_series([None] * 20)], [PlotSeries("qps", [], [], "#ffffff")]],
    ids=["no-series", "all-none", "empty"],
)
def test_no_data_yet(series: list[PlotSeries]) -> None:
    text = render_plot(series, 40, 9, title="QPS", now=NOW)
    rows = _rows(text)
    assert len(rows) == 9
    assert {len(row) for row in rows} == {40}
    assert rows[0].startswith("QPS")
    assert rows[9 // 2].strip() == "no data yet"
    assert rows[9 // 2] == "no data yet".center(40)


@pytest.mark.parametrize(("width", "height"), [(19, 12), (60, 4), (5, 2), (0, 0)])
def test_too_small_is_a_short_notice(width: int, height: int) -> None:
    text = render_plot([_series(_wave())], width, height, now=NOW)
    assert "\n" not in text.plain
    assert len(text.plain) <= width
    assert "small" in text.plain or width < len("too small")


def test_deterministic_whatever_ran_before() -> None:
    args = ([_series(_wave()), _series([1.0] * 100, "p95", "red")], 60, 12)
    first = render_plot(*args, title="QPS", now=NOW)
    # plotext's figure is global: another plot in between must not leak into the next.
    render_plot([_series([9.0] * 10)], 90, 20, ascii=True, background="#000000", now=NOW + 5)
    again = render_plot(*args, title="QPS", now=NOW)
    assert again.plain == first.plain
    assert again.spans == first.spans


def test_x_axis_is_time_before_now() -> None:
    rows = _rows(render_plot([_series(_wave())], 60, 12, now=NOW, ascii=True))
    labels = rows[-1].split()
    assert labels[-1] == "now"
    assert labels[0] == "-5m"
    assert "-1m" in labels


def test_now_defaults_to_the_newest_sample() -> None:
    series = [_series(_wave())]
    assert render_plot(series, 60, 12).plain == render_plot(series, 60, 12, now=NOW).plain


def test_y_axis_starts_at_zero_unless_told_otherwise() -> None:
    series = [_series([100.0 + i % 10 for i in range(151)])]
    from_zero = _rows(render_plot(series, 60, 12, now=NOW, ascii=True))
    from_data = _rows(render_plot(series, 60, 12, now=NOW, ascii=True, y_min=None))
    assert from_zero[-3].split("+")[0].strip() == "0"
    assert from_data[-3].split("+")[0].strip() != "0"


def test_step_series_holds_each_value_until_the_next() -> None:
    # Alone, the step series uses the left axis: 1 for the first half, then 3.
    step = _series([1.0] * 75 + [3.0] * 76, "target")
    canvas = _canvas(render_plot([], 60, 12, now=NOW, ascii=True, step_series=[step]))
    marked = {i: _marker_columns(row) for i, row in enumerate(canvas) if _marker_columns(row)}
    low_row, high_row = max(marked), min(marked)
    # No diagonal: every row between the two levels is marked in one column only.
    middle = [cols for i, cols in marked.items() if high_row < i < low_row]
    assert middle and all(len(cols) == 1 for cols in middle)
    assert max(marked[low_row]) <= min(marked[high_row])


def test_step_series_gets_the_right_axis_beside_lines() -> None:
    step = _series([2.0] * 75 + [4.0] * 76, "target")
    rows = _rows(render_plot([_series(_wave())], 60, 12, now=NOW, ascii=True, step_series=[step]))
    right_labels = [row.rsplit("+", 1)[1].strip() for row in rows[2:-2] if row.rstrip()[-1] != "|"]
    assert "4" in right_labels
    assert "0" in right_labels


def test_a_spike_in_a_long_history_survives_thinning() -> None:
    times = [NOW - 3600 + 2 * i for i in range(1801)]
    values: list[float | None] = [1.0] * 1801
    values[900] = 10.0
    rows = _rows(render_plot([PlotSeries("qps", times, values, "#ffffff")], 60, 12, now=NOW))
    top_canvas_row = rows[2]  # under the header and the frame
    assert any("\u2800" <= c <= "\u28ff" for c in top_canvas_row)


def test_header_keys_series_in_their_colours() -> None:
    text = render_plot(
        [_series(_wave(), "qps", "#4ea1ff"), _series([1.0] * 151, "ttft p95", "#ff9900")],
        60,
        12,
        title="Service",
        y_label="req/s",
        now=NOW,
    )
    header = _rows(text)[0]
    assert header.startswith("Service  (req/s)  ━ qps  ━ ttft p95")
    colours = {span.style.color for span in text.spans if not isinstance(span.style, str)}
    assert Color.from_rgb(0x4E, 0xA1, 0xFF) in colours
    assert Color.from_rgb(0xFF, 0x99, 0x00) in colours


def test_long_header_is_cropped_to_width() -> None:
    text = render_plot([_series(_wave(), "x" * 80)], 40, 8, title="T", now=NOW)
    assert [len(row) for row in _rows(text)] == [40] * 8


def test_ansi_theme_colours_stay_the_terminals_own() -> None:
    # What an ANSI theme hands over (Textual's ansi_green as Rich writes it): a palette
    # number, not an RGB guess; "default" leaves the terminal's own colours alone.
    text = render_plot(
        [_series(_wave(), "qps", "color(2)")],
        40,
        8,
        now=NOW,
        background="default",
        foreground="default",
    )
    colours = {span.style.color for span in text.spans if not isinstance(span.style, str)}
    assert colours - {None} == {Color.parse("color(2)")}
    assert all(span.style.bgcolor is None for span in text.spans if not isinstance(span.style, str))
