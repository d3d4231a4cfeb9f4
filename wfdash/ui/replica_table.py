"""The replica table: one row per replica, updated in place, sorted, filtered.

Rows are keyed by the replica's stable key, so a refresh updates only the cells that
changed (a full rebuild of 1000 rows costs ~270 ms; see shared/facts/textual.md) and the
cursor stays on the same replica across refreshes, sorts and filters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.geometry import Size
from textual.widgets import DataTable

from wfdash.collect.model import ReplicaStatus
from wfdash.collect.poller import ReplicaView
from wfdash.collect.scrape import ScrapeError
from wfdash.format import DASH, fmt_age, fmt_num, fmt_seconds
from wfdash.ui.sparkline import sparkline

SPARK_WIDTH = 8


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int  # fixed: re-measuring a column on every changed cell costs O(rows) each
    sort_key: Callable[[ReplicaView], tuple[int, float | str]]


def _num(value: float | None) -> tuple[int, float | str]:
    """Sort unknowns last whatever the direction's numbers do."""
    return (1, 0.0) if value is None else (0, value)


def _text(value: str | None) -> tuple[int, float | str]:
    return (1, "") if value is None else (0, value)


COLUMNS: tuple[Column, ...] = (
    Column("id", "ID", 4, lambda v: (0, v.replica.replica_id)),
    Column("layer", "LAYER", 5, lambda v: _text(v.replica.layer.value)),
    Column("infra", "INFRA", 20, lambda v: _text(v.replica.infra)),
    Column("instance", "INSTANCE", 15, lambda v: _text(v.replica.instance_type)),
    Column("spot", "SPOT", 4, lambda v: (0, int(v.replica.is_spot))),
    Column("status", "STATUS", 20, lambda v: _text(v.replica.status.value)),
    Column("version", "VER", 3, lambda v: _num(v.replica.version)),
    Column(
        "backend", "BACKEND", 8, lambda v: _text(v.metrics.dialect.value if v.metrics else None)
    ),
    Column("qps", "QPS", 5 + SPARK_WIDTH + 1, lambda v: _num(v.metrics.qps if v.metrics else None)),
    Column("ttft", "TTFT p95", 11, lambda v: _num(_ttft(v)[0])),
    Column("tps", "tok/s", 7, lambda v: _num(v.metrics.gen_tps if v.metrics else None)),
    Column("queue", "BUSY/Q", 7, lambda v: _num(v.metrics.waiting if v.metrics else None)),
    Column(
        "scrape", "SCRAPE", 16, lambda v: _text(v.scrape_error.value if v.scrape_error else None)
    ),
)
SORT_KEYS = {column.key: column for column in COLUMNS}


def _ttft(view: ReplicaView) -> tuple[float | None, bool]:
    """TTFT p95, or llama.cpp's prefill estimate flagged as such."""
    m = view.metrics
    if m is None:
        return None, False
    if m.ttft_p95 is not None:
        return m.ttft_p95, False
    return m.ttft_mean, m.ttft_is_estimate


@dataclass(frozen=True, slots=True)
class Styles:
    """Theme colours the cells use (read from the app's CSS variables)."""

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


def row_cells(view: ReplicaView, now: float, styles: Styles, *, ascii: bool) -> tuple[Text, ...]:
    """The cells of one replica's row: every number with its unit, unknown as a dash."""
    r, m = view.replica, view.metrics
    stale = view.stale_s is not None or view.scrape_error is not None
    metric_style = styles.stale if stale else ""
    age = fmt_age(now - r.launched_at) if r.launched_at else ""
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
        busy = f"{fmt_num(m.running, 0)}/{fmt_num(m.waiting, 0)}"
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
        scrape = Text(
            f"ok {fmt_seconds(view.scrape_latency_s)}" if slow else "ok", style=styles.stale
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
    shown = [v for v in views if matches(v, query)]
    known = sorted(
        (v for v in shown if column.sort_key(v)[0] == 0), key=column.sort_key, reverse=reverse
    )
    unknown = [v for v in shown if column.sort_key(v)[0] != 0]
    return known + unknown


class ReplicaTable(DataTable[Text]):
    """Keeps its rows in step with the latest replica views."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self.sort_column = "id"
        self.sort_reverse = False
        self._cells: dict[str, tuple[Text, ...]] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for column in COLUMNS:
            self.add_column(column.label, key=column.key, width=column.width)

    def watch_virtual_size(self, old: Size, new: Size) -> None:
        # The height is auto: it follows the rows. DataTable recomputes its size when idle,
        # and a layout pass already under way then kept the old height (blank lines under
        # two filtered rows, seen in about half the runs): ask for one more.
        if old.height != new.height:
            self.call_after_refresh(self.refresh, layout=True)

    def label_columns(self) -> None:
        """Show the sort indicator in the sorted column's header."""
        for column in COLUMNS:
            arrow = (" ▼" if self.sort_reverse else " ▲") if column.key == self.sort_column else ""
            self.columns[column.key].label = Text(column.label + arrow)  # type: ignore[index]
        self.refresh()

    def show(self, views: list[ReplicaView], now: float, styles: Styles, *, ascii: bool) -> None:
        """Replace the rows' content by ``views`` (already sorted and filtered)."""
        selected = self.selected_key
        wanted = [v.replica.key for v in views]
        wanted_set = set(wanted)
        before = set(self._order)
        for key in [k for k in self._order if k not in wanted_set]:
            self.remove_row(key)
            del self._cells[key]
        for view in views:
            key = view.replica.key
            cells = row_cells(view, now, styles, ascii=ascii)
            old = self._cells.get(key)
            if old is None:
                self.add_row(*cells, key=key)
            else:
                for column, was, now_cell in zip(COLUMNS, old, cells, strict=True):
                    if was != now_cell:
                        self.update_cell(key, column.key, now_cell)
            self._cells[key] = cells
        displayed = [k for k in self._order if k in wanted_set] + [
            k for k in wanted if k not in before
        ]
        if displayed != wanted:
            # Row ids are unique within the one service shown: order rows by them.
            position = {view.replica.replica_id: i for i, view in enumerate(views)}
            self.sort("id", key=lambda cell: position.get(int(cell.plain), 0))
        self._order = wanted
        if selected in self._cells:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    @property
    def selected_key(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except Exception:
            return None
        return str(row_key.value) if row_key.value is not None else None
