"""The server's own prompt, a masked input, and the seconds left in the 30 s step."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from bastionctl.ssh.auth import strip_escapes

STEP = 30
# What is left once escape sequences are gone: control characters, newlines included.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def sanitise(prompt: str, limit: int = 200) -> str:
    """A server prompt fit to show on one line: no escape sequences or control characters."""
    text = CONTROL.sub(" ", strip_escapes(prompt)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TotpDialog(ModalScreen[str | None]):
    """Dismissed with the typed answer, or None when the person presses Esc."""

    BINDINGS = [Binding("escape", "cancel", "Cancel login")]

    def __init__(
        self,
        prompt: str,
        echo: bool = False,
        clock: Callable[[], float] = time.time,
        step_used: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__()
        self.prompt_text = sanitise(prompt) or "Verification code:"
        self.echo = echo
        self.clock = clock
        self.step_used = step_used

    def compose(self) -> ComposeResult:
        with Vertical(id="totp-box"):
            yield Label("The bastion asks:", classes="dialog-title")
            yield Label(self.prompt_text, id="totp-prompt")
            yield Input(password=not self.echo, id="totp-input", placeholder="code")
            yield Label("", id="totp-step")
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
