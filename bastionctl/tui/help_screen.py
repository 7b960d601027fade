"""Every key of the main screen, with what it does."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss_help", "Close")]

    def __init__(self, bindings: list[BindingType]) -> None:
        super().__init__()
        self.keys = [b for b in bindings if isinstance(b, Binding)]

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for binding in self.keys:
            table.add_row(binding.key_display or binding.key, binding.description)
        with Vertical(id="help-box"):
            yield Label("bastionctl keys", classes="dialog-title")
            yield Static(table)
            yield Static(
                "Tunnels through one bastion share one login: this window's for the tunnels "
                "opened here; the background agent's for `bastionctl tunnel` in a terminal and "
                "detached ones, kept `persist` seconds (default 600) after its last tunnel "
                "closes, so the next needs no code (`bastionctl logout` closes it now).",
                markup=False,
                classes="help-note",
            )
            yield Label("Esc: close", classes="dialog-help")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
