"""TOTP secrets per bastion: which are stored, set one (masked), remove one."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

from bastionctl import sanitise
from bastionctl.errors import BastionctlError
from bastionctl.otp import SecretStore, parse_secret
from bastionctl.tui.input_dialog import InputDialog
from bastionctl.tui.plain import cell


def _check_secret(text: str) -> str | None:
    try:
        parse_secret(text)
    except BastionctlError as exc:
        return str(exc)
    return None


class OtpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("s", "set_secret", "Set secret"),
        Binding("d", "remove_secret", "Remove secret"),
        Binding("escape,q", "close", "Close"),
    ]

    def __init__(self, bastions: list[str], secrets: SecretStore) -> None:
        super().__init__()
        self.bastions = bastions
        self.secrets = secrets

    def compose(self) -> ComposeResult:
        with Vertical(id="otp-box", classes="dialog"):
            yield Label("TOTP secrets in the keyring", classes="dialog-title")
            yield DataTable(id="otp-table", cursor_type="row")
            # Why a secret cannot be read, whole: the table's cell has room for a word only.
            yield Label(id="otp-problem")
            yield Label("s: set   d: remove   Esc: close", classes="dialog-help")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("bastion", "secret")
        for alias in self.bastions:
            table.add_row(cell(alias), cell("…"), key=alias)
        table.focus()
        self.load_status()

    @work(thread=True, exclusive=True)
    def load_status(self) -> None:
        for alias in self.bastions:
            try:
                status = "stored" if self.secrets.get(alias) is not None else "none"
            except BastionctlError as exc:
                self.app.call_from_thread(self.show_problem, str(exc))
                status = "cannot read"
            self.app.call_from_thread(self.show_status, alias, status)

    def show_status(self, alias: str, status: str) -> None:
        table = self.query_one(DataTable)
        table.update_cell(alias, table.ordered_columns[1].key, cell(status), update_width=True)

    def show_problem(self, text: str) -> None:
        """The keyring's problem (the same for every bastion), whole and wrapped, plain text."""
        problem = self.query_one("#otp-problem", Label)
        problem.update(Text(sanitise.line(text)))
        problem.display = True

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_set_secret(self) -> None:
        alias = self.selected()
        if alias is None:
            return

        def store(text: str | None) -> None:
            if text is not None:
                self.store_secret(alias, text)

        self.app.push_screen(
            InputDialog(
                f"TOTP secret (base32 or otpauth:// URI) for {alias}",
                password=True,
                check=_check_secret,
            ),
            store,
        )

    @work(thread=True)
    def store_secret(self, alias: str, text: str) -> None:
        try:
            self.secrets.set(alias, parse_secret(text))
        except BastionctlError as exc:
            self.app.call_from_thread(self.tell, str(exc), "error")
            return
        self.app.call_from_thread(self.show_status, alias, "stored")
        self.app.call_from_thread(self.tell, f"stored the TOTP secret for {alias}")

    @work(thread=True)
    def action_remove_secret(self) -> None:
        alias = self.app.call_from_thread(self.selected)
        if alias is None:
            return
        try:
            removed = self.secrets.delete(alias)
        except BastionctlError as exc:
            self.app.call_from_thread(self.tell, str(exc), "error")
            return
        self.app.call_from_thread(self.show_status, alias, "none")
        what = "removed" if removed else "there was no"
        self.app.call_from_thread(self.tell, f"{what} TOTP secret for {alias}")

    def tell(self, text: str, severity: SeverityLevel = "information") -> None:
        """A notification: plain, sanitised text (a keyring error, an alias from a tag)."""
        self.app.notify(sanitise.line(text), severity=severity, markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
