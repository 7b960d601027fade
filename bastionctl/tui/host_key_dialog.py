"""A host key no known_hosts file lists (ssh.first_contact's question), shown whole as plain
text, answered with `yes` or the fingerprint; anything else or Esc refuses the key."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from bastionctl import sanitise


class HostKeyDialog(ModalScreen[str | None]):
    """Dismissed with the typed answer (checked by the core), or None on Esc."""

    BINDINGS = [Binding("escape", "cancel", "Refuse the key")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = sanitise.prompt(question)

    def compose(self) -> ComposeResult:
        with Vertical(id="host-key-box", classes="dialog"):
            yield Label("Unknown host key", classes="dialog-title", markup=False)
            yield Static(self.question, id="host-key-question", markup=False)
            yield Input(id="host-key-input", placeholder="yes, or paste the fingerprint")
            yield Label("Enter: answer   Esc: refuse the key", classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
