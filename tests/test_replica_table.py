"""The replica table's fast row rendering gives what rich's own rendering gives."""

from __future__ import annotations

import pytest
from rich.console import Console
from rich.segment import Segment
from rich.text import Text

from snapshots import fixtures
from wfdash.ui.replica_table import COLUMNS, Styles, row_cells, row_line, row_segments

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
    assert fast_rows >= len(rows) // 2  # the fast path is the common one


def test_a_cell_too_long_for_its_column_takes_rich_ellipsis_path() -> None:
    cells = list(cells_of("healthy", ascii=False, styles=STYLES)[0])
    index = [c.key for c in COLUMNS].index("infra")
    cells[index] = Text("x" * 40)
    assert row_segments(cells) is None
    line = row_line(cells).plain
    assert "…" in line and len(line) == sum(c.width + 2 for c in COLUMNS)
