"""A read-only text to look at (bastion hosts entries, doctor results, an export diff).

With `confirm`, `y` dismisses it with True (write it) and `n`/Esc with False. Title and text
are shown as plain, sanitised text (they carry hosts' names, servers' banners), never markup.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from bastionctl import sanitise


class ReportScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("escape,n,q", "answer(False)", "Close"),
        Binding("y", "answer(True)", "Yes", show=False),
    ]

    def __init__(self, title: str, text: str, confirm: str | None = None) -> None:
        super().__init__()
        self.title_text = sanitise.line(title)
        self.text = sanitise.text(text)
        self.confirm = confirm

    def compose(self) -> ComposeResult:
        with Vertical(id="report-box", classes="dialog"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            with VerticalScroll(id="report-body"):
                yield Static(self.text, markup=False, id="report-text")
            help_text = f"y: {self.confirm}   n / Esc: cancel" if self.confirm else "Esc: close"
            yield Label(help_text, classes="dialog-help")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(bool(yes and self.confirm))
