"""The replica table: one row per replica, updated in place, sorted, filtered.

Rows are keyed by the replica's stable key, so the cursor stays on the same replica
across refreshes, sorts and filters, and only rows on screen are ever drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from operator import itemgetter
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Span, Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from wfdash.collect.kinds import ReplicaStatus, ScrapeError
from wfdash.format import DASH, fmt_age, fmt_num, fmt_seconds
from wfdash.ui.sparkline import sparkline

if TYPE_CHECKING:
    from wfdash.collect.snapshot import ReplicaView

SPARK_WIDTH = 8


class Column(NamedTuple):  # not a dataclass: see panels.Palette
    key: str
    label: str
    width: int  # fixed: re-measuring a column on every changed cell costs O(rows) each
    sort_key: Callable[[ReplicaView], tuple[int, float | str]]
    # Narrower than all the columns, the table leaves out those with the lowest `drop`
    # first (1, 2, ...); 0: always shown.
    drop: int = 0


def _num(value: float | None) -> tuple[int, float | str]:
    """Sort unknowns last whatever the direction's numbers do."""
    return (1, 0.0) if value is None else (0, value)


def _text(value: str | None) -> tuple[int, float | str]:
    return (1, "") if value is None else (0, value)


COLUMNS: tuple[Column, ...] = (
    Column("id", "ID", 4, lambda v: (0, v.replica.replica_id)),
    Column("layer", "LAYER", 5, lambda v: _text(v.replica.layer.value), drop=8),
    Column("infra", "INFRA", 18, lambda v: _text(v.replica.infra), drop=6),
    Column("instance", "INSTANCE", 15, lambda v: _text(v.replica.instance_type), drop=1),
    Column("spot", "SPOT", 4, lambda v: (0, int(v.replica.is_spot)), drop=4),
    Column("status", "STATUS", 20, lambda v: _text(v.replica.status.value)),
    Column("version", "VER", 3, lambda v: _num(v.replica.version), drop=5),
    Column(
        "backend",
        "BACKEND",
        8,
        lambda v: _text(v.metrics.dialect.value if v.metrics else None),
        drop=3,
    ),
    Column("qps", "QPS", 5 + SPARK_WIDTH + 1, lambda v: _num(v.metrics.qps if v.metrics else None)),
    Column("ttft", "TTFT p95", 10, lambda v: _num(_ttft(v)[0])),
    Column("tps", "tok/s", 6, lambda v: _num(v.metrics.gen_tps if v.metrics else None), drop=7),
    Column("queue", "BUSY/Q", 6, lambda v: _num(v.metrics.waiting if v.metrics else None)),
    Column("cache", "CACHE", 7, lambda v: _text(build_label(v)), drop=2),
    Column(
        "scrape", "SCRAPE", 12, lambda v: _text(v.scrape_error.value if v.scrape_error else None)
    ),
)
SORT_KEYS = {column.key: column for column in COLUMNS}


def table_width(columns: Sequence[Column]) -> int:
    """Screen cells a row of `columns` takes: each column and a space either side."""
    return sum(column.width + 2 for column in columns)


def fitting_columns(width: int) -> tuple[Column, ...]:
    """The columns a table `width` cells wide shows: all of them if they fit; else it
    leaves out placement details (instance, cache, backend, spot, version, infra, then
    tok/s and layer) before any of ID, STATUS, QPS, TTFT, BUSY/Q and SCRAPE, so an
    80-column terminal still sees each replica's traffic, latency and scrape health."""
    shown = list(COLUMNS)
    for column in sorted((c for c in COLUMNS if c.drop), key=lambda c: c.drop):
        if table_width(shown) <= width:
            break
        shown.remove(column)
    return tuple(shown)


TABLE_WIDTH = table_width(COLUMNS)


def build_label(view: ReplicaView) -> str | None:
    """'v3 hit' / 'v4 miss': the replica's CACHE_VERSION and whether its BitNet.cpp
    build came from the cache (reported by the wfdash agent), None when unknown."""
    m = view.metrics
    if m is None or m.cache_version is None:
        return None
    if m.cache_hit is None:
        return m.cache_version
    return m.cache_version + (" hit" if m.cache_hit else " miss")


def _ttft(view: ReplicaView) -> tuple[float | None, bool]:
    """TTFT p95, or llama.cpp's prefill estimate flagged as such."""
    m = view.metrics
    if m is None:
        return None, False
    if m.ttft_p95 is not None:
        return m.ttft_p95, False
    return m.ttft_mean, m.ttft_is_estimate


class Styles(NamedTuple):
    """Theme colours the cells use (read from the app's CSS variables); a NamedTuple like
    panels.Palette."""

    ready: str
    launching: str
    not_ready: str
    failed: str
    preempted: str
    stale: str
    base: str
    burst: str
    spark: str


def status_style(status: ReplicaStatus, styles: Styles) -> str:
    if status is ReplicaStatus.READY:
        return styles.ready
    if status is ReplicaStatus.PREEMPTED:
        return styles.preempted
    if status is ReplicaStatus.NOT_READY:
        return styles.not_ready
    if status.is_failed or status is ReplicaStatus.UNKNOWN:
        return styles.failed
    return styles.launching


def row_age(view: ReplicaView, now: float) -> str:
    """The replica's age as its row shows it: the only part of a row that depends on the
    clock, so a row drawn for the same view and the same age is the same row."""
    launched = view.replica.launched_at
    return fmt_age(now - launched) if launched else ""


def row_cells(view: ReplicaView, now: float, styles: Styles, *, ascii: bool) -> tuple[Text, ...]:
    """The cells of one replica's row: every number with its unit, unknown as a dash."""
    r, m = view.replica, view.metrics
    stale = view.stale_s is not None or view.scrape_error is not None
    metric_style = styles.stale if stale else ""
    age = row_age(view, now)
    ttft, estimated = _ttft(view)
    ttft_text = (("~" if estimated else "") + fmt_seconds(ttft)) if ttft is not None else DASH
    qps = m.qps if m else None
    qps_cell = Text(fmt_num(qps), style=metric_style)
    if view.qps_history:
        qps_cell.append(" ")
        qps_cell.append(sparkline(view.qps_history, SPARK_WIDTH, ascii=ascii), style=styles.spark)
    if m is not None and m.qps is None and m.gen_tps is not None:
        # llama.cpp has no request counter: show token throughput's shape instead.
        qps_cell = Text(DASH, style=metric_style)
        qps_cell.append(" ")
        qps_cell.append(sparkline(view.tps_history, SPARK_WIDTH, ascii=ascii), style=styles.spark)
    busy = DASH
    if m is not None and (m.running is not None or m.waiting is not None):
        busy_mark = "~" if m.busy_is_estimate else ""
        busy = f"{busy_mark}{fmt_num(m.running, 0)}/{fmt_num(m.waiting, 0)}"
    if view.scrape_error is not None:
        label = view.scrape_error.value
        if view.scrape_error is ScrapeError.HTTP and view.scrape_detail.startswith("HTTP "):
            label = view.scrape_detail.split(" ")[0] + " " + view.scrape_detail.split(" ")[1]
        scrape = Text(label, style=styles.failed)
        if view.stale_s is not None:
            scrape.append(f" stale {fmt_age(view.stale_s)}", style=styles.stale)
    elif view.scrape_latency_s is not None:
        # Only a slow scrape gets its time here (the detail screen has every one): a
        # latency that changes on every row every poll would repaint the whole column.
        slow = view.scrape_latency_s >= 1.0
        # The agent answered without the backend's families (late or failed): say so.
        label = "partial" if m is not None and m.backend_metrics_ok is False else "ok"
        scrape = Text(
            f"{label} {fmt_seconds(view.scrape_latency_s)}" if slow else label, style=styles.stale
        )
    else:
        scrape = Text(DASH, style=styles.stale)
    status = Text(r.status.value, style=status_style(r.status, styles))
    if age:
        status.append(f" {age}", style=styles.stale)
    return (
        Text(str(r.replica_id), justify="right"),
        Text(r.layer.value, style=styles.base if r.layer.value == "base" else styles.burst),
        Text(r.infra or DASH),
        Text(r.instance_type or DASH),
        Text("spot" if r.is_spot else "-"),
        status,
        Text(str(r.version) if r.version is not None else DASH, justify="right"),
        Text(m.dialect.value if m else DASH),
        qps_cell,
        Text(ttft_text + (" est" if estimated and ttft is not None else ""), style=metric_style),
        Text(fmt_num(m.gen_tps if m else None, 1), style=metric_style, justify="right"),
        Text(busy, style=metric_style, justify="right"),
        Text(
            build_label(view) or DASH,
            style=styles.launching if m is not None and m.cache_hit is False else "",
        ),
        scrape,
    )


def matches(view: ReplicaView, query: str) -> bool:
    """Case-insensitive substring match on what an operator would type."""
    if not query:
        return True
    r = view.replica
    haystack = " ".join(
        str(part)
        for part in (
            r.replica_id,
            r.layer.value,
            r.infra,
            r.instance_type,
            r.status.value,
            r.provider,
            r.region,
            "spot" if r.is_spot else "on-demand",
            r.cluster_name,
            view.metrics.dialect.value if view.metrics else "",
            view.scrape_error.value if view.scrape_error else "",
        )
        if part
    ).lower()
    return all(word in haystack for word in query.lower().split())


def arrange(
    views: Sequence[ReplicaView], sort: str, reverse: bool, query: str
) -> list[ReplicaView]:
    column = SORT_KEYS.get(sort, COLUMNS[0])
    sort_key = column.sort_key
    shown = [v for v in views if matches(v, query)] if query else views
    # Each view's key computed once (this runs for every row on every refresh).
    keyed = [(sort_key(v), v) for v in shown]
    known = sorted((kv for kv in keyed if kv[0][0] == 0), key=itemgetter(0), reverse=reverse)
    return [v for _, v in known] + [v for k, v in keyed if k[0] != 0]


class ReplicaTable(ScrollView, can_focus=True):
    """The rows of the latest replica views; only what is on screen is ever drawn.

    A Line API widget: ``show`` keeps the sorted, filtered views and renders the rows
    in view, comparing each with what the screen has, so a refresh costs O(visible rows)
    and repaints only rows that changed. DataTable keeps every row's cells and re-lays
    them out, which made a 1000-replica refresh cost ~300 ms.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "replica-table--header",
        "replica-table--cursor",
    }
    DEFAULT_CSS = """
    ReplicaTable {
        background: $surface;
        color: $foreground;
        height: auto;
        max-height: 100%;
        & > .replica-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .replica-table--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .replica-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus {
            background-tint: $foreground 5%;
            & > .replica-table--header {
                background-tint: $foreground 5%;
            }
            & > .replica-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
        }
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "cursor_to(0)", "First", show=False),
        Binding("end,G", "cursor_to(-1)", "Last", show=False),
        Binding("left", "scroll_left", "Left", show=False),
        Binding("right", "scroll_right", "Right", show=False),
        Binding("enter", "choose", "Detail", show=False),
        Binding("w", "toggle_wide", "wide", show=False),
    ]

    class RowChosen(Message):
        """Enter or a click on the selected row: open the replica's detail."""

        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    class HeaderClicked(Message):
        """A click on a column header: sort by it (again reverses)."""

        def __init__(self, column: str) -> None:
            super().__init__()
            self.column = column

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sort_column = "id"
        self.sort_reverse = False
        self.cursor_row = 0
        self._views: list[ReplicaView] = []
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._now = 0.0
        self._styles: Styles | None = None
        self._ascii = False
        # Rendered rows by key, with the view and the age (``row_age``) they were drawn
        # from: a row is redrawn only when its view or the age it shows changed.
        self._drawn: dict[str, tuple[ReplicaView, str, Strip]] = {}
        self._shown: dict[int, Strip] = {}  # screen line -> the strip last returned for it
        self._header: Strip | None = None
        self._rich_styles: dict[str, Style] = {}
        # The columns on screen (see fitting_columns), their places in COLUMNS and width.
        # `wide`: every column, scrolled sideways with left/right.
        self.wide = False
        self.columns: tuple[Column, ...] = COLUMNS
        self._places: tuple[int, ...] = tuple(range(len(COLUMNS)))
        self._width = TABLE_WIDTH
        self.virtual_size = Size(TABLE_WIDTH, 1)

    # ------------------------------------------------------------------ data in

    def show(self, views: list[ReplicaView], now: float, styles: Styles, *, ascii: bool) -> None:
        """Replace the rows by ``views`` (already sorted and filtered).

        The cursor follows its replica when rows are added, removed or reordered.
        """
        selected = self.selected_key
        restyled = styles != self._styles or ascii != self._ascii
        self._views = views
        self._keys = [view.replica.key for view in views]
        self._index = {key: i for i, key in enumerate(self._keys)}
        self._now, self._styles, self._ascii = now, styles, ascii
        if restyled:
            self._drawn.clear()
        else:
            for key in self._drawn.keys() - self._index.keys():
                del self._drawn[key]
        if selected is not None and selected in self._index:
            self.cursor_row = self._index[selected]
        self.cursor_row = max(0, min(self.cursor_row, len(views) - 1))
        height = len(views) + 1
        if self.virtual_size.height != height:
            self.virtual_size = Size(self._width, height)
            self.refresh(layout=True)
            self._fit_columns()
        self._scroll_cursor_into_view()
        self._refresh_changed_lines()

    def on_resize(self, _: events.Resize) -> None:
        self._fit_columns()

    def action_toggle_wide(self) -> None:
        self.wide = not self.wide
        self._fit_columns()

    def _fit_columns(self) -> None:
        """Choose the columns for the widget's width, less a vertical scrollbar when the
        rows need one (the columns chosen never change the rows: no back and forth)."""
        room = self.size.width
        if len(self._views) + 1 > self.size.height:
            room -= self.styles.scrollbar_size_vertical
        columns = COLUMNS if self.wide else fitting_columns(room)
        if columns == self.columns:
            return
        self.columns = columns
        self._places = tuple(COLUMNS.index(column) for column in columns)
        self._width = table_width(columns)
        self._header = None
        self._drawn.clear()
        self._shown.clear()
        self.virtual_size = Size(self._width, len(self._views) + 1)
        self.refresh(layout=True)

    def label_columns(self) -> None:
        """Show the sort indicator in the sorted column's header."""
        self._header = None
        self.refresh_line(self.scroll_offset.y)

    # ------------------------------------------------------------------ reading

    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def row_keys(self) -> list[str]:
        """The replica keys in display order."""
        return list(self._keys)

    @property
    def selected_key(self) -> str | None:
        if not self._keys:
            return None
        return self._keys[min(self.cursor_row, len(self._keys) - 1)]

    def header_label(self, column: str) -> str:
        """A column's header text, with its sort arrow when it is the sorted one."""
        label = SORT_KEYS[column].label
        if column != self.sort_column:
            return label
        return label + (" ▼" if self.sort_reverse else " ▲")

    # ------------------------------------------------------------------ drawing

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        if y == 0:
            pad = self.rich_style + self.get_component_rich_style("replica-table--header")
            strip = self._header_strip().crop_extend(scroll_x, scroll_x + width, pad)
        else:
            strip = self._visible_row(scroll_y + y - 1, scroll_x, width)
        self._shown[y] = strip
        return strip

    def _header_strip(self) -> Strip:
        if self._header is None:
            style = self.get_component_rich_style("replica-table--header")
            line = Text(no_wrap=True, end="")
            for column in self.columns:
                line.append(" ")
                line.append(_fit(Text(self.header_label(column.key)), column.width))
                line.append(" ")
            self._header = Strip(line.render(self.app.console)).apply_style(self.rich_style + style)
        return self._header

    def _row_strip(self, index: int) -> Strip:
        if not 0 <= index < len(self._views) or self._styles is None:
            return Strip.blank(self._width, self._base_style())
        view = self._views[index]
        key = self._keys[index]
        age = row_age(view, self._now)
        drawn = self._drawn.get(key)
        if drawn is not None and drawn[0] is view and drawn[1] == age:
            strip = drawn[2]
        else:
            cells = row_cells(view, self._now, self._styles, ascii=self._ascii)
            if len(self._places) != len(cells):
                cells = tuple(cells[place] for place in self._places)
            base = self._base_style()
            segments = row_segments(cells, base, self.columns)
            if segments is None:
                rendered = row_line(cells, self.columns).render(self.app.console)
                # Merged runs: the terminal gets one colour code per run, not per segment.
                strip = Strip(rendered).apply_style(base).simplify()
            else:
                strip = Strip(segments, self._width)
            self._drawn[key] = (view, age, strip)
        if index == self.cursor_row:
            cursor = self._base_style("replica-table--cursor")
            strip = Strip(Segment.apply_style(strip, post_style=cursor), strip.cell_length)
        return strip

    def _visible_row(self, index: int, scroll_x: int, width: int) -> Strip:
        """Row ``index`` as the screen shows it: scrolled sideways and cut to the width."""
        return self._row_strip(index).crop_extend(scroll_x, scroll_x + width, self._base_style())

    def _refresh_changed_lines(self) -> None:
        """Ask for a repaint of the screen lines whose content changed, and only those
        (one region per run of adjacent changed lines)."""
        if not self.is_mounted or self.size.height == 0:
            return
        scroll_x, scroll_y = self.scroll_offset
        region = self.scrollable_content_region
        shown = self._shown
        run_start = 0  # first line of the current run of changed lines, 0: none
        for y in range(1, region.height + 1):
            changed = False
            if y < region.height:
                strip = self._visible_row(scroll_y + y - 1, scroll_x, region.width)
                old = shown.get(y)
                changed = old is not strip and old != strip
            if changed and not run_start:
                run_start = y
            elif not changed and run_start:
                self.refresh_lines(scroll_y + run_start, y - run_start)
                run_start = 0

    def _base_style(self, component: str = "") -> Style:
        """The widget's (or a component's) rich style, computed once per style change:
        each ``rich_style`` walks the DOM (~0.1 ms), and a refresh asked for it per row."""
        style = self._rich_styles.get(component)
        if style is None:
            style = self.get_component_rich_style(component) if component else self.rich_style
            self._rich_styles[component] = style
        return style

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._rich_styles.clear()
        self._header = None
        self._drawn.clear()
        self._shown.clear()

    # ------------------------------------------------------------------ moving

    def _move_cursor(self, row: int) -> None:
        if not self._keys:
            return
        row = max(0, min(row, len(self._keys) - 1))
        if row == self.cursor_row:
            return
        old, self.cursor_row = self.cursor_row, row
        self.refresh_line(old + 1)
        self.refresh_line(row + 1)
        self._scroll_cursor_into_view()

    def _scroll_cursor_into_view(self) -> None:
        visible = max(1, self.scrollable_content_region.height - 1)
        top = round(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False, immediate=True)

    def action_cursor(self, step: int) -> None:
        self._move_cursor(self.cursor_row + step)

    def action_page(self, direction: int) -> None:
        page = max(1, self.scrollable_content_region.height - 2)
        self._move_cursor(self.cursor_row + direction * page)

    def action_cursor_to(self, row: int) -> None:
        self._move_cursor(row if row >= 0 else len(self._keys) - 1)

    def action_choose(self) -> None:
        key = self.selected_key
        if key is not None:
            self.post_message(self.RowChosen(key))

    def on_click(self, event: events.Click) -> None:
        x = event.x + round(self.scroll_x)
        if event.y == 0:
            column = _column_at(x, self.columns)
            if column is not None:
                self.post_message(self.HeaderClicked(column))
            return
        row = round(self.scroll_y) + event.y - 1
        if 0 <= row < len(self._keys):
            if row == self.cursor_row:
                self.action_choose()
            else:
                self._move_cursor(row)


def row_line(cells: Sequence[Text], columns: Sequence[Column] = COLUMNS) -> Text:
    """One row as rich Text: each cell fitted to its column, a space either side."""
    line = Text(no_wrap=True, end="")
    for column, cell in zip(columns, cells, strict=True):
        line.append(" ")
        line.append(_fit(cell, column.width))
        line.append(" ")
    return line


_ELLIPSIS = "…"


def row_segments(
    cells: Sequence[Text], base: Style | None = None, columns: Sequence[Column] = COLUMNS
) -> list[Segment] | None:
    """``row_line(cells, columns)`` rendered with ``base`` applied and same-style runs merged,
    built straight from the cells' spans.

    Rendering a row through rich Text (fit, join, render, apply the widget's style,
    merge runs) took ~0.25 ms, most of a refresh's cost with every visible row changing.
    This builds the same screen in a fraction of that: a cell too long for its column is
    cut with an ellipsis as rich cuts it. A cell with double-width characters or
    overlapping spans returns None and the caller renders through rich.
    tests/test_replica_table.py checks both give the same screen.
    """
    base = _null_style() if base is None else base
    space = _combined(base, "")
    segments: list[Segment] = []
    run: list[str] = []  # the texts of the current run, all in ``run_style``
    run_style = space
    for column, cell in zip(columns, cells, strict=True):
        plain = cell.plain
        spans = cell.spans
        length = len(plain)
        if cell_len(plain) != length:
            return None  # double-width characters: rich knows where to cut them
        width = column.width
        gap = width - length
        if gap < 0:
            # rich's truncate(overflow="ellipsis"): width-1 characters and "…", the
            # spans cut at the new end (a span reaching the end covers the "…").
            plain = plain[: width - 1] + _ELLIPSIS
            length, gap = width, 0
            spans = [
                Span(span.start, min(span.end, width), span.style)
                for span in spans
                if span.start < width
            ]
        cell_style = _combined(base, cell.style)
        pieces: list[tuple[str, Style]] = [(" ", space)]
        if gap and cell.justify == "right":
            pieces.append((" " * gap, space))
        position = 0
        for span in spans:
            if span.start < position:
                return None
            if span.start > position:
                pieces.append((plain[position : span.start], cell_style))
            pieces.append((plain[span.start : span.end], _spanned(base, cell.style, span.style)))
            position = span.end
        if position < length:
            pieces.append((plain[position:], cell_style))
        if gap and cell.justify != "right":
            pieces.append((" " * gap, cell_style))
        pieces.append((" ", space))
        for text, style in pieces:
            if style is run_style or style == run_style:
                run.append(text)
            else:
                if run:
                    segments.append(Segment("".join(run), run_style))
                run, run_style = [text], style
    if run:
        segments.append(Segment("".join(run), run_style))
    return segments


@lru_cache(maxsize=1)
def _null_style() -> Style:
    return Style.null()


@lru_cache(maxsize=512)
def _style(style: str | Style) -> Style:
    return style if isinstance(style, Style) else Style.parse(style) if style else Style.null()


@lru_cache(maxsize=1024)
def _combined(base: Style, span: str | Style) -> Style:
    return base + _style(span)


@lru_cache(maxsize=1024)
def _spanned(base: Style, cell: str | Style, span: str | Style) -> Style:
    """A span's style in a cell on ``base``, combined as rich combines them."""
    return base + (_style(cell) + _style(span))


def _fit(cell: Text, width: int) -> Text:
    """``cell`` cut or padded to exactly ``width`` cells, honouring its justification."""
    fitted = cell.copy()
    fitted.truncate(width, overflow="ellipsis")
    gap = width - fitted.cell_len
    if gap > 0:
        if cell.justify == "right":
            fitted = Text(" " * gap) + fitted
        else:
            fitted.pad_right(gap)
    return fitted


def _column_at(x: int, columns: Sequence[Column]) -> str | None:
    left = 0
    for column in columns:
        left += column.width + 2
        if x < left:
            return column.key
    return None
