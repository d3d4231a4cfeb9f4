"""The control flows' screens: action forms, the plan preview, and the actions' progress.

Every change goes form → plan → :class:`PreviewScreen` → confirm → the ActionRunner. The
screens only collect input and show plans and records: validation and planning are
:mod:`wfdash.control`'s, so the same rules hold for every way an action is started.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from wfdash.format import fmt_age, fmt_money
from wfdash.ui.panels import Palette

if TYPE_CHECKING:  # wfdash.control loads on the first action, not before the first paint
    from wfdash.control.plan import Plan
    from wfdash.control.runner import ActionRecord

# The dialogs' styles, loaded when the first dialog opens (not before the first paint).
DIALOG_CSS = "control.tcss"

# ---------------------------------------------------------------------------- forms

FieldKind = Literal["int", "float", "text", "choice"]


@dataclass(frozen=True)
class FormField:
    """One input of an action form; ``choices`` (value, label) for a picker."""

    key: str
    label: str
    kind: FieldKind
    value: str = ""
    choices: Sequence[tuple[str, Text | str]] = ()
    hint: str = ""


@dataclass(frozen=True)
class FormSpec:
    title: str
    fields: Sequence[FormField]
    # Fixed values merged into what the user typed (e.g. the action's kind and service).
    fixed: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""


# A form's values → the plan to preview, or one line saying why not.
Propose = Callable[[dict[str, Any]], "Plan | str"]


class FormScreen(ModalScreen["Plan | None"]):
    """Asks for an action's values; stays open with the reason until they plan.

    Enter in the last field (or ctrl+s anywhere) submits; escape cancels.
    """

    CSS_PATH = DIALOG_CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "cancel"),
        Binding("ctrl+s", "submit", "preview"),
    ]

    def __init__(self, spec: FormSpec, propose: Propose) -> None:
        super().__init__(classes="dialog-screen")
        self.spec = spec
        self.propose = propose

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self.spec.title, style="bold"), classes="dialog-title")
            if self.spec.note:
                yield Static(self.spec.note, classes="dialog-note")
            for spec_field in self.spec.fields:
                label = spec_field.label + (f"  ({spec_field.hint})" if spec_field.hint else "")
                yield Static(label, classes="field-label")
                if spec_field.kind == "choice":
                    options = [Option(text, id=value) for value, text in spec_field.choices]
                    picker = OptionList(*options, id=f"field-{spec_field.key}")
                    yield picker
                else:
                    yield Input(
                        spec_field.value,
                        id=f"field-{spec_field.key}",
                        type="integer"
                        if spec_field.kind == "int"
                        else "number"
                        if spec_field.kind == "float"
                        else "text",
                    )
            yield Static("", id="form-error", classes="dialog-error")
            yield Static(
                "enter: next field / preview · ctrl+s: preview · escape: cancel",
                classes="dialog-keys",
            )

    def on_mount(self) -> None:
        for spec_field in self.spec.fields:
            if spec_field.kind == "choice":
                picker = self.query_one(f"#field-{spec_field.key}", OptionList)
                values = [value for value, _ in spec_field.choices]
                if spec_field.value in values:
                    picker.highlighted = values.index(spec_field.value)
                elif values:
                    picker.highlighted = 0
        first = self.query(".dialog Input, .dialog OptionList").first()
        first.focus()

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.spec.fixed)
        for spec_field in self.spec.fields:
            if spec_field.kind == "choice":
                picker = self.query_one(f"#field-{spec_field.key}", OptionList)
                index = picker.highlighted
                out[spec_field.key] = (
                    spec_field.choices[index][0] if index is not None else spec_field.value
                )
                continue
            raw = self.query_one(f"#field-{spec_field.key}", Input).value.strip()
            out[spec_field.key] = _typed(raw, spec_field.kind)
        return out

    def action_submit(self) -> None:
        result = self.propose(self.values())
        if isinstance(result, str):
            self.query_one("#form-error", Static).update(Text(result))
            return
        self.dismiss(result)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    @on(OptionList.OptionSelected)
    def _next_or_submit(self) -> None:
        widgets = list(self.query(".dialog Input, .dialog OptionList"))
        focused = self.focused
        if focused in widgets and widgets.index(focused) < len(widgets) - 1:
            widgets[widgets.index(focused) + 1].focus()
        else:
            self.action_submit()


def _typed(raw: str, kind: FieldKind) -> Any:
    """The typed value of one input; left as text when it does not parse, so the action's
    own validation names the field and the problem."""
    if raw == "" and kind in ("int", "float"):
        return None
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        return raw
    return raw


# ---------------------------------------------------------------------------- preview


class PreviewScreen(ModalScreen[bool]):
    """The plan, before anything changes: command, YAML diff, cost change, restarts.

    ``y``/enter confirms; a dangerous plan (terminate, down) wants its confirm phrase
    typed first. Escape/``n`` cancels. Nothing is sent until the screen returns True.
    """

    CSS_PATH = DIALOG_CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,n", "cancel", "cancel"),
        Binding("y", "confirm", "confirm"),
        Binding("enter", "confirm", "confirm", show=False),
    ]

    def __init__(self, plan: Plan, palette: Palette, *, target: str) -> None:
        super().__init__(classes="dialog-screen")
        self.plan = plan
        self.palette = palette
        self.target = target  # where the action goes, e.g. "sandbox" or the API server

    def compose(self) -> ComposeResult:
        plan = self.plan
        with Vertical(classes="dialog preview"):
            yield Static(Text(plan.summary, style="bold"), classes="dialog-title")
            with VerticalScroll(id="preview-body"):
                yield Static(plan_table(plan, self.palette, self.target), id="preview-plan")
                if plan.yaml_diff:
                    yield Static(diff_text(plan.yaml_diff, self.palette), id="preview-diff")
            if plan.danger and plan.confirm_phrase:
                yield Static(
                    Text.assemble(
                        ("This cannot be undone from wfdash. ", f"bold {self.palette.bad}"),
                        f"Type {plan.confirm_phrase!r} to confirm:",
                    ),
                    classes="field-label",
                )
                yield Input(placeholder="type it here", id="confirm-phrase")
            yield Static("", id="preview-error", classes="dialog-error")
            keys = "enter: confirm" if plan.danger else "y / enter: confirm"
            yield Static(f"{keys} · n / escape: cancel", classes="dialog-keys")

    def on_mount(self) -> None:
        if self.plan.danger:
            self.query_one("#confirm-phrase", Input).focus()

    def action_confirm(self) -> None:
        if self.plan.danger and self.plan.confirm_phrase:
            typed = self.query_one("#confirm-phrase", Input).value.strip()
            if typed != self.plan.confirm_phrase:
                self.query_one("#preview-error", Static).update(
                    f"Type {self.plan.confirm_phrase!r} exactly to confirm, or escape to cancel."
                )
                return
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Input.Submitted, "#confirm-phrase")
    def _phrase_entered(self) -> None:
        self.action_confirm()


def plan_table(plan: Plan, palette: Palette, target: str) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row("runs", Text(plan.command, style=palette.accent))
    table.add_row("on", target)
    table.add_row("cost", cost_change(plan, palette))
    table.add_row("restarts", plan.restarts)
    for warning in plan.warnings:
        table.add_row(Text("warning", style=palette.warn), Text(warning, style=palette.warn))
    if not plan.yaml_diff:
        table.add_row("YAML", Text("no change to the service's YAML", style=palette.dim))
    return table


def cost_change(plan: Plan, palette: Palette) -> Text:
    now, after = plan.cost_now_per_hour, plan.cost_after_per_hour
    if now is None and after is None:
        return Text("unknown", style=palette.dim)
    text = Text(f"{fmt_money(now)} → {fmt_money(after)}")
    if now is not None and after is not None:
        delta = after - now
        sign = "+" if delta > 0 else "−" if delta < 0 else "±"
        style = palette.bad if delta > 0 else palette.ok if delta < 0 else palette.dim
        text.append(f"  ({sign}{fmt_money(abs(delta))}, estimate)", style=style)
    return text


def diff_text(diff: str, palette: Palette) -> Text:
    text = Text()
    for line in diff.splitlines():
        style = ""
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("+"):
            style = palette.ok
        elif line.startswith("-"):
            style = palette.bad
        elif line.startswith("@@"):
            style = palette.accent
        text.append(line + "\n", style=style)
    text.rstrip()
    return text


# ---------------------------------------------------------------------------- progress

STATE_MARK = {"running": "▶", "succeeded": "✓", "failed": "✗", "cancelled": "⊘"}


def record_style(record: ActionRecord, palette: Palette) -> str:
    return {
        "running": palette.accent,
        "succeeded": palette.ok,
        "failed": palette.bad,
        "cancelled": palette.warn,
    }[record.state]


def record_line(record: ActionRecord, now: float, palette: Palette) -> Text:
    """One action in the progress panel: state, what, how long, its latest news."""
    end = record.finished if record.finished is not None else now
    text = Text.assemble(
        (f"{STATE_MARK[record.state]} {record.state} ", f"bold {record_style(record, palette)}"),
        record.plan.summary,
        (f"  {fmt_age(max(end - record.started, 0))}", palette.dim),
    )
    news = record.error or record.result or (record.log[-1] if record.log else "")
    if news:
        text.append(f"  · {news}", style=palette.bad if record.error else palette.dim)
    text.truncate(400)
    return text


class ActionsScreen(ModalScreen[None]):
    """Every action of this session with its streamed log; ``c`` cancels a running one."""

    CSS_PATH = DIALOG_CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,a", "close", "close"),
        Binding("c", "cancel_action", "cancel running"),
    ]

    def __init__(
        self,
        records: Callable[[], Sequence[ActionRecord]],
        cancel: Callable[[str], None],
        palette: Callable[[], Palette],
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(classes="dialog-screen")
        self.records = records
        self.cancel = cancel
        self.palette = palette
        self.clock = clock

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog actions-log"):
            yield Static(Text("Actions this session", style="bold"), classes="dialog-title")
            with VerticalScroll():
                yield Static(id="actions-body")
            yield Static("c: cancel the running action · escape: close", classes="dialog-keys")

    def on_mount(self) -> None:
        self.update_view()

    def update_view(self) -> None:
        palette = self.palette()
        now = self.clock()
        records = self.records()
        if not records:
            body = Text("No actions yet in this session. Past ones are in the event log.")
            self.query_one("#actions-body", Static).update(body)
            return
        body = Text()
        for record in records:
            body.append_text(record_line(record, now, palette))
            body.append(f"\n    {record.plan.command}\n", style=palette.dim)
            for line in record.log[-15:]:
                body.append(f"    {line}\n")
            body.append("\n")
        body.rstrip()
        self.query_one("#actions-body", Static).update(body)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_cancel_action(self) -> None:
        running = [r for r in self.records() if r.state == "running"]
        if not running:
            self.notify("No action is running.")
            return
        self.cancel(running[0].id)
        self.notify(f"Cancelling: {running[0].plan.summary}")
