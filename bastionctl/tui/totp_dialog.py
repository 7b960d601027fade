"""Who asks (the bastion or the target, by name), its own prompt, a masked input, and the
seconds left in the 30 s step. Everything shown is plain, sanitised text, never markup."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from bastionctl import sanitise
from bastionctl.prompting import Origin, origin_of

STEP = 30


def asker_title(origin: Origin | None) -> str:
    """The dialog's title: "server-02 (target) asks:" for a server's question, "bastionctl
    asks:" for bastionctl's own (a key's passphrase)."""
    if origin is None:
        return "bastionctl asks:"
    return f"{sanitise.line(origin.host)} ({origin.role.value}) asks:"


class TotpDialog(ModalScreen[str | None]):
    """Dismissed with the typed answer, or None when the person presses Esc.

    `origin` names the server that asks; by default the one a prompting.Question carries.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel login")]

    def __init__(
        self,
        prompt: str,
        echo: bool = False,
        clock: Callable[[], float] = time.time,
        step_used: Callable[[], bool] = lambda: False,
        origin: Origin | None = None,
    ) -> None:
        super().__init__()
        self.origin = origin or origin_of(prompt)
        asked = self.origin.prompt if self.origin is not None else prompt
        self.title_text = asker_title(self.origin)
        self.prompt_text = sanitise.line(asked) or "Verification code:"
        self.echo = echo
        self.clock = clock
        self.step_used = step_used

    def compose(self) -> ComposeResult:
        with Vertical(id="totp-box"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield Label(self.prompt_text, id="totp-prompt", markup=False)
            yield Input(password=not self.echo, id="totp-input", placeholder="code")
            yield Label("", id="totp-step", markup=False)
            yield Label("Enter: send   Esc: cancel the login", classes="dialog-help")

    def on_mount(self) -> None:
        self.tick()
        self.set_interval(0.5, self.tick)
        self.query_one(Input).focus()

    def tick(self) -> None:
        left = STEP - int(self.clock()) % STEP
        text = f"{left:2d} s left in this code's 30 s step"
        if self.step_used():
            text += " - this step's code was already used: wait for the next step"
        self.query_one("#totp-step", Label).update(text)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
