"""Table-cell sparklines: fixed width, newest at the right, scaled from a floor (not the min)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wfdash.ui.sparkline import ASCII_GLYPHS, UNICODE_GLYPHS, sparkline


def test_flat_traffic_is_a_full_bar_not_zero() -> None:
    # Textual's Sparkline scales from the minimum, so a steady 5 QPS looks like none.
    assert sparkline([5.0] * 6, 6) == "██████"
    assert sparkline([0.0] * 6, 6) == "▁▁▁▁▁▁"


def test_scales_from_the_floor_to_the_max() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7], 8) == UNICODE_GLYPHS
    assert sparkline([10, 24, 38], 3, floor=10) == "▁▅█"


def test_newest_value_at_the_right_edge_with_left_padding() -> None:
    assert sparkline([7.0, 7.0], 5) == "   ██"
    assert sparkline([], 4) == "    "


def test_older_values_beyond_width_are_dropped() -> None:
    # The dropped 100 does not flatten the scale of what is shown.
    assert sparkline([100.0, 0.0, 7.0], 2) == "▁█"


def test_gaps_are_blank_and_distinct_from_zero() -> None:
    assert sparkline([None, 0.0, 7.0, None, 7.0], 5) == " ▁█ █"
    assert sparkline([1.0, math.nan, math.inf, 1.0], 4) == "█  █"


def test_all_none_is_blank() -> None:
    assert sparkline([None, None], 6) == "      "


def test_a_little_traffic_never_reads_as_none() -> None:
    assert sparkline([0.0, 0.01, 100.0], 3) == "▁▂█"


def test_values_below_the_floor_sit_on_it() -> None:
    assert sparkline([-3.0, 2.0], 2) == "▁█"


def test_ascii_glyphs() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7, None], 9, ascii=True) == ASCII_GLYPHS + " "
    assert sparkline([5.0, 5.0], 2, ascii=True) == "##"


@pytest.mark.parametrize("width", [0, -3])
def test_no_width_no_text(width: int) -> None:
    assert sparkline([1.0, 2.0], width) == ""


@given(
    st.lists(st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6)), max_size=40),
    st.integers(min_value=1, max_value=30),
    st.booleans(),
)
def test_always_exactly_width_known_glyphs(
    values: list[float | None], width: int, ascii: bool
) -> None:
    out = sparkline(values, width, ascii=ascii)
    assert len(out) == width
    assert set(out) <= set(ASCII_GLYPHS if ascii else UNICODE_GLYPHS) | {" "}
    shown = values[-width:]
    assert [c == " " for c in out[width - len(shown) :]] == [v is None for v in shown]


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=2, max_size=20))
def test_larger_values_never_get_lower_glyphs(values: list[float]) -> None:
    ordered = sorted(values)
    out = sparkline(ordered, len(ordered))
    levels = [UNICODE_GLYPHS.index(c) for c in out]
    assert levels == sorted(levels)
