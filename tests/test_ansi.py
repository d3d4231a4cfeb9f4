"""The fast colour-only ANSI decoder against rich's own ``Text.from_ansi``."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.text import Text

from wfdash.ui.ansi import ansi_text
from wfdash.ui.plot import PlotSeries, render_plot


def rendered(text: Text, color_system: str = "truecolor") -> str:
    """What a terminal receives for ``text``: the comparison that matters."""
    out = io.StringIO()
    console = Console(file=out, color_system=color_system, width=200, legacy_windows=False)  # type: ignore[arg-type]
    console.print(text, end="", soft_wrap=True)
    return out.getvalue()


def assert_same(ansi: str, style: str = "") -> None:
    ours, rich_own = ansi_text(ansi, style), Text.from_ansi(ansi, style=style, end="")
    assert ours.plain == rich_own.plain
    assert rendered(ours) == rendered(rich_own)
    assert rendered(ours, "256") == rendered(rich_own, "256")


def plot_ansi(**options: object) -> list[str]:
    """The ANSI plotext really prints, captured where render_plot decodes it."""
    import wfdash.ui.plot as plot_module

    captured: list[str] = []
    original = plot_module.ansi_text

    def capture(ansi: str, style: object = "") -> Text:
        captured.append(ansi)
        return original(ansi, style)  # type: ignore[arg-type]

    plot_module.ansi_text = capture  # type: ignore[assignment]
    try:
        t = tuple(float(i * 2) for i in range(120))
        series = [
            PlotSeries("qps", t, tuple(1 + (i % 9) * 0.4 for i in range(120)), "#58a6ff"),
            PlotSeries(
                "p95", t, tuple(None if i % 17 == 0 else i / 50 for i in range(120)), "ansi_red"
            ),
        ]
        render_plot(series, 70, 16, title="t", **options)  # type: ignore[arg-type]
    finally:
        plot_module.ansi_text = original  # type: ignore[assignment]
    return captured


def test_real_plotext_output_decodes_exactly_as_rich_does() -> None:
    cases = [
        plot_ansi(background="#101010", foreground="#eeeeee"),
        plot_ansi(background="ansi_default", foreground="ansi_bright_white"),
        plot_ansi(),
        plot_ansi(ascii=True, background="#ffffff", foreground="#000000"),
    ]
    for captured in cases:
        assert captured, "render_plot decoded nothing"
        for ansi in captured:
            assert ansi.count("\x1b[") > 50
            assert_same(ansi, "on #202020")


def test_codes_it_does_not_know_fall_back_to_rich() -> None:
    for ansi in (
        "\x1b[5mblink\x1b[0m x",
        "\x1b[?25lno cursor",
        "\x1b[38;5mx",
        "\x1b[2Jclear",
    ):
        assert_same(ansi)


_CODES = st.sampled_from(
    [
        "0",
        "1",
        "2",
        "3",
        "4",
        "7",
        "22",
        "23",
        "24",
        "27",
        "39",
        "49",
        "",
        "31",
        "97",
        "44",
        "104",
        "38;5;208",
        "48;5;17",
        "38;2;1;2;3",
        "48;2;250;0;9",
        "1;38;5;12;48;2;9;9;9",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_CODES, st.text(alphabet="ab ⡆\n│\r\x08", max_size=5)), max_size=12))
def test_any_mix_of_supported_codes_matches_rich(chunks: list[tuple[str, str]]) -> None:
    assert_same("".join(f"\x1b[{code}m{text}" for code, text in chunks))
