"""The tunnels of this process and of every other bastionctl process of the user.

Other processes report these (an agent's last_error may quote a server): every cell is plain,
sanitised text, never markup.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from bastionctl.errors import UsageError
from bastionctl.tui.plain import cell
from bastionctl.tui.rows import tunnel_cells
from bastionctl.tunnels.protocol import TunnelId, TunnelInfo

COLUMNS = ("id", "service", "host", "connect to", "state", "uptime", "in", "out", "conns", "error")


class TunnelPanel(DataTable[Text]):
    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns(*COLUMNS)

    def show(self, infos: list[TunnelInfo], now: float | None = None) -> None:
        selected = self.selected_id()
        self.clear()
        for info in infos:
            self.add_row(*(cell(value) for value in tunnel_cells(info, now)), key=str(info.id))
        ids = [info.id for info in infos]
        if selected in ids:
            self.move_cursor(row=ids.index(selected))

    def selected_id(self) -> TunnelId | None:
        if self.row_count == 0:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # the cursor is on no row
            return None
        try:
            return TunnelId.parse(key) if key else None
        except UsageError:
            return None
