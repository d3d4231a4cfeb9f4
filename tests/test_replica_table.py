"""The replica table's fast row rendering gives what rich's own rendering gives."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Sequence

import pytest
from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip

from snapshots import fixtures
from wfdash.collect.snapshot import ReplicaView
from wfdash.ui.replica_table import (
    COLUMNS,
    SORT_KEYS,
    TABLE_WIDTH,
    Column,
    Styles,
    arrange,
    fitting_columns,
    matches,
    row_age,
    row_cells,
    row_line,
    row_segments,
    table_width,
)

STYLES = Styles(
    ready="#3fb950",
    launching="#d29922",
    not_ready="bold #f0883e",
    failed="#f85149",
    preempted="#bc8cff",
    stale="#6e7681",
    base="#58a6ff",
    burst="#f778ba",
    spark="#58a6ff",
)
ANSI = Styles(
    "green", "yellow", "bold red", "red", "magenta", "bright_black", "blue", "cyan", "blue"
)


def cells_of(snapshot_name: str, *, ascii: bool, styles: Styles) -> list[tuple[Text, ...]]:
    snapshot = getattr(fixtures, snapshot_name)()
    return [
        row_cells(view, fixtures.clock(), styles, ascii=ascii)
        for service in snapshot.services
        for view in service.replicas
    ]


def screen(segments: list[Segment]) -> list[tuple[str, object]]:
    """One (character, style) per cell: what the terminal shows, however it is split."""
    return [(char, segment.style or None) for segment in segments for char in segment.text]


@pytest.mark.parametrize("name", ["healthy", "troubled", "bitnet", "two_services"])
@pytest.mark.parametrize("ascii", [False, True])
@pytest.mark.parametrize("styles", [STYLES, ANSI], ids=["truecolor", "ansi"])
def test_fast_rows_match_rich(name: str, ascii: bool, styles: Styles) -> None:
    console = Console(width=300, color_system="truecolor")
    rows = cells_of(name, ascii=ascii, styles=styles)
    assert rows
    fast_rows = 0
    for cells in rows:
        reference = list(row_line(cells).render(console))
        fast = row_segments(cells)
        if fast is None:
            continue
        fast_rows += 1
        assert screen(fast) == screen(reference)
    assert fast_rows == len(rows)  # every fixture row takes the fast path


def widget_reference(
    cells: Sequence[Text], base: Style, console: Console, columns: Sequence[Column] = COLUMNS
) -> list[Segment]:
    """What the widget drew before the fast path: rich renders, then the widget's style."""
    return list(Strip(row_line(cells, columns).render(console)).apply_style(base).simplify())


BASES = [
    Style.parse("#c9d1d9 on #161b22"),
    Style.parse("bold white on blue"),
    Style.null(),
]


@pytest.mark.parametrize("name", ["healthy", "troubled", "bitnet", "two_services"])
@pytest.mark.parametrize("base", BASES, ids=["theme", "bold", "null"])
def test_fast_rows_with_the_widget_style_match_rich(name: str, base: Style) -> None:
    console = Console(width=300, color_system="truecolor")
    for cells in cells_of(name, ascii=False, styles=STYLES):
        fast = row_segments(cells, base)
        assert fast is not None  # every fixture row takes the fast path
        assert screen(fast) == screen(widget_reference(cells, base, console))
        assert sum(cell_len(segment.text) for segment in fast) == TABLE_WIDTH


def test_fast_rows_merge_same_style_runs() -> None:
    base = BASES[0]
    for cells in cells_of("troubled", ascii=False, styles=STYLES):
        fast = row_segments(cells, base)
        assert fast is not None
        assert all(a.style != b.style for a, b in itertools.pairwise(fast))


def test_a_cell_too_long_for_its_column_is_cut_with_rich_ellipsis() -> None:
    console = Console(width=300, color_system="truecolor")
    cells = list(cells_of("healthy", ascii=False, styles=STYLES)[0])
    index = [c.key for c in COLUMNS].index("infra")
    cells[index] = Text("x" * 40)
    fast = row_segments(cells, BASES[0])
    assert fast is not None
    assert screen(fast) == screen(widget_reference(cells, BASES[0], console))
    line = "".join(segment.text for segment in fast)
    assert "x" * 17 + "…" in line and len(line) == TABLE_WIDTH


def random_cell(rng: random.Random) -> Text:
    """A cell of 0-25 characters with some spans, maybe right-justified, maybe too long."""
    colours = ["", "#f85149", "bold #3fb950", "italic", "on #222222", "#58a6ff"]
    plain = "".join(rng.choice("abc 0123.~/-") for _ in range(rng.randint(0, 25)))
    text = Text(plain, style=rng.choice(colours), justify=rng.choice(["left", "right"]))
    position = 0
    while position < len(plain) and rng.random() < 0.7:
        start = rng.randint(position, len(plain))
        end = rng.randint(start, len(plain))
        text.stylize(rng.choice(colours[1:]), start, end)
        position = end
    return text


def test_random_rows_match_rich() -> None:
    """Cut cells, spans across the cut, empty spans, right-justified cells."""
    console = Console(width=300, color_system="truecolor")
    rng = random.Random(7)
    fast_rows = 0
    for _ in range(400):
        cells = [random_cell(rng) for _ in COLUMNS]
        base = rng.choice(BASES)
        fast = row_segments(cells, base)
        if fast is None:
            continue
        fast_rows += 1
        assert screen(fast) == screen(widget_reference(cells, base, console)), cells
    assert fast_rows >= 300


def test_overlapping_spans_and_wide_characters_take_the_rich_path() -> None:
    cells = list(cells_of("healthy", ascii=False, styles=STYLES)[0])
    overlapping = Text("abcdef")
    overlapping.stylize("red", 0, 4)
    overlapping.stylize("bold", 2, 6)
    assert row_segments([overlapping, *cells[1:]]) is None
    assert row_segments([Text("日本"), *cells[1:]]) is None


def test_a_row_depends_on_the_clock_only_through_its_age() -> None:
    snapshot = fixtures.troubled()
    views = [view for service in snapshot.services for view in service.replicas]
    now = fixtures.clock()
    for later in (now + 1, now + 29, now + 61, now + 3600, now + 90_000):
        for view in views:
            same_age = row_age(view, later) == row_age(view, now)
            same_row = row_cells(view, later, STYLES, ascii=False) == row_cells(
                view, now, STYLES, ascii=False
            )
            assert same_row == same_age


def test_busy_queue_estimated_from_the_agent_is_marked() -> None:
    view = fixtures.healthy().services[0].replicas[0]
    assert view.metrics is not None
    busy_column = [c.key for c in COLUMNS].index("queue")

    def busy(**metrics: object) -> str:
        m = dataclasses.replace(view.metrics, **metrics)  # type: ignore[arg-type]
        cells = row_cells(
            dataclasses.replace(view, metrics=m), fixtures.clock(), STYLES, ascii=False
        )
        return cells[busy_column].plain

    assert busy(running=1.0, waiting=2.0, busy_is_estimate=False) == "1/2"
    assert busy(running=1.0, waiting=2.0, busy_is_estimate=True) == "~1/2"
    assert busy(running=None, waiting=None, busy_is_estimate=False) == "—"


def test_a_scrape_without_the_backends_families_says_partial() -> None:
    view = fixtures.healthy().services[0].replicas[0]
    assert view.metrics is not None and view.scrape_error is None
    scrape_column = [c.key for c in COLUMNS].index("scrape")

    def scrape(latency: float, backend_ok: bool | None) -> str:
        m = dataclasses.replace(view.metrics, backend_metrics_ok=backend_ok)  # type: ignore[arg-type]
        shown = dataclasses.replace(view, metrics=m, scrape_latency_s=latency)
        return row_cells(shown, fixtures.clock(), STYLES, ascii=False)[scrape_column].plain

    assert scrape(0.02, None) == "ok"
    assert scrape(0.02, True) == "ok"
    assert scrape(2.0, True) == "ok 2.0s"
    assert scrape(0.02, False) == "partial"
    assert scrape(2.0, False) == "partial 2.0s"


@pytest.mark.parametrize("width", [200, 160, 159, 140, 120, 100, 80, 78, 40, 0])
def test_fitting_columns_leave_out_placement_details_first(width: int) -> None:
    shown = fitting_columns(width)
    keys = [column.key for column in shown]
    assert [c for c in COLUMNS if c in shown] == list(shown)  # in their order
    # ID, STATUS, QPS, TTFT, BUSY/Q and SCRAPE are never left out.
    assert {"id", "status", "qps", "ttft", "queue", "scrape"} <= set(keys)
    if table_width(COLUMNS) <= width:
        assert shown == COLUMNS
    elif table_width(shown) > width:  # even the core does not fit: nothing more to leave
        assert all(column.drop == 0 for column in shown)
    else:  # the widest set that fits: putting back the next one to go would not
        left_out = sorted((c for c in COLUMNS if c not in shown), key=lambda c: c.drop)
        assert table_width(shown) + left_out[-1].width + 2 > width
    if width == 80:
        assert keys == ["id", "status", "qps", "ttft", "queue", "scrape"]


@pytest.mark.parametrize("width", [120, 80])
def test_fast_rows_of_fewer_columns_match_rich(width: int) -> None:
    columns = fitting_columns(width)
    places = [COLUMNS.index(column) for column in columns]
    base = Style.parse("#c9d1d9 on #0d1117")
    for row in cells_of("troubled", ascii=False, styles=STYLES):
        cells = [row[place] for place in places]
        fast = row_segments(cells, base, columns)
        assert fast is not None
        reference = widget_reference(cells, base, Console(width=300), columns)
        assert screen(fast) == screen(reference)
        assert sum(cell_len(segment.text) for segment in fast) == table_width(columns)


def reference_arrange(
    views: Sequence[ReplicaView], sort: str, reverse: bool, query: str
) -> list[ReplicaView]:
    """The straightforward arrangement: filter, sort the known, unknown last in order."""
    column = SORT_KEYS.get(sort, COLUMNS[0])
    shown = [v for v in views if matches(v, query)]
    known = sorted(
        (v for v in shown if column.sort_key(v)[0] == 0), key=column.sort_key, reverse=reverse
    )
    return known + [v for v in shown if column.sort_key(v)[0] != 0]


@pytest.mark.parametrize("name", ["healthy", "troubled", "bitnet", "two_services"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("query", ["", "spot", "base ready", "nothing-matches"])
def test_arrange_matches_the_reference(name: str, reverse: bool, query: str) -> None:
    snapshot = getattr(fixtures, name)()
    views = [view for service in snapshot.services for view in service.replicas]
    for sort in [*SORT_KEYS, "no-such-column"]:
        got = arrange(views, sort, reverse, query)
        assert [v.replica.key for v in got] == [
            v.replica.key for v in reference_arrange(views, sort, reverse, query)
        ]
