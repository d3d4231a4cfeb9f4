"""A widget that shows a block of rich Text and repaints only the lines that changed.

Static re-renders its whole content (Text → Content → strips) on every update, and the
terminal is sent every line again. A plot redrawn each poll changes a few columns of a
few lines: this widget renders the Text once to strips, compares them with what is on
screen and refreshes just the changed lines, which keeps both CPU and bytes on the
wire down (see tests/benchmarks/bench_tui.py).
"""

from __future__ import annotations

from rich.text import Text
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget


class LinesView(Widget):
    """Shows ``update(text)``'s lines, one strip per line, cut or padded to the width."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.text = Text()
        self._strips: list[Strip] = []

    def update(self, text: Text) -> None:
        self.text = text
        if not self.is_mounted:
            return
        console = self.app.console
        strips = [
            Strip(list(line.render(console, end=""))) for line in text.split("\n", allow_blank=True)
        ]
        old, self._strips = self._strips, strips
        width = self.size.width
        for y in range(max(len(old), len(strips))):
            if y >= len(old) or y >= len(strips) or old[y] != strips[y]:
                self.refresh(Region(0, y, width, 1))

    def on_mount(self) -> None:
        self.update(self.text)

    def notify_style_update(self) -> None:
        """Every line is drawn in the widget's style: repaint them all. The strips stay:
        they come from the text alone."""
        super().notify_style_update()
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y < len(self._strips):
            return self._strips[y].crop_extend(0, width, None).apply_style(self.rich_style)
        return Strip.blank(width, self.rich_style)
