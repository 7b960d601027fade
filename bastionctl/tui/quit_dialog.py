"""Quitting with tunnels up: they end with this process, so ask first."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label


class QuitDialog(ModalScreen[str | None]):
    """Dismissed with "stop", "detach" (hand them to the background agent) or None (stay)."""

    BINDINGS = [
        Binding("y", "answer('stop')", "Stop them and quit"),
        Binding("d", "answer('detach')", "Leave them running in the background"),
        Binding("n,escape", "answer(None)", "Stay"),
    ]

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def compose(self) -> ComposeResult:
        tunnels = "1 tunnel is" if self.count == 1 else f"{self.count} tunnels are"
        with Vertical(id="quit-box"):
            yield Label(f"{tunnels} up in this window.", classes="dialog-title")
            yield Label("y: stop them and quit")
            yield Label(
                "d: leave them running in the background agent, on the same ports "
                "(open connections are cut once; `bastionctl tunnel list` shows them)"
            )
            yield Label("n / Esc: stay", classes="dialog-help")

    def action_answer(self, choice: str | None) -> None:
        self.dismiss(choice)
