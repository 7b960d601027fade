"""One line of input: a remote port, or a TOTP secret (masked)."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from bastionctl import sanitise


class InputDialog(ModalScreen[str | None]):
    """Dismissed with the text once `check` accepts it (its error is shown), None on Esc."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        title: str,
        *,
        password: bool = False,
        placeholder: str = "",
        check: Callable[[str], str | None] = lambda _text: None,
    ) -> None:
        super().__init__()
        self.title_text = sanitise.line(title)  # it may name a host from a tag: plain text
        self.password = password
        self.placeholder = placeholder
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(id="input-box", classes="dialog"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield Input(password=self.password, placeholder=self.placeholder, id="dialog-input")
            yield Label("", id="dialog-error", markup=False)
            yield Label("Enter: OK   Esc: cancel", classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        problem = self.check(event.value)
        if problem:
            self.query_one("#dialog-error", Label).update(sanitise.line(problem))
            return
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
