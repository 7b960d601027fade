"""The host list: bastions and the hosts behind them, narrowed by the filter.

A virtual list (Textual's line API): only the visible lines are rendered, so showing or
filtering thousands of hosts costs a list assignment, not thousands of widgets or cells.
"""

from __future__ import annotations

from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from bastionctl.tui.rows import HostRow

COLUMNS = ("alias", "bastion", "platform", "IPv6", "IPv4", "services")


def columns(group_by: str) -> tuple[str, ...]:
    return ("alias", group_by, *COLUMNS[2:])


MAX_WIDTH = 40


class HostTable(ScrollView, can_focus=True):
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "host-table--header",
        "host-table--cursor",
        "host-table--even",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
    ]
    cursor: reactive[int] = reactive(0)

    class Highlighted(Message):
        def __init__(self, alias: str | None) -> None:
            super().__init__()
            self.alias = alias

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[HostRow] = []
        self.columns: tuple[str, ...] = COLUMNS
        self.widths = [len(c) for c in COLUMNS]

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def show(self, rows: list[HostRow], group_by: str = "bastion") -> None:
        selected = self.selected_alias()
        self.rows = rows
        self.columns = columns(group_by)
        widths = [len(c) for c in self.columns]
        for row in rows:
            for index, cell in enumerate(row.cells()):
                if len(cell) > widths[index]:
                    widths[index] = min(MAX_WIDTH, len(cell))
        self.widths = widths
        self.virtual_size = Size(sum(widths) + 2 * len(widths), len(rows) + 1)
        position = next((i for i, r in enumerate(rows) if r.alias == selected), 0)
        self.set_reactive(HostTable.cursor, min(position, max(0, len(rows) - 1)))
        self.refresh()
        self.post_message(self.Highlighted(self.selected_alias()))

    def selected_alias(self) -> str | None:
        return self.rows[self.cursor].alias if 0 <= self.cursor < len(self.rows) else None

    def line_text(self, cells: tuple[str, ...]) -> str:
        return "  ".join(
            (c if len(c) <= w else c[: w - 1] + "…").ljust(w)
            for c, w in zip(cells, self.widths, strict=True)
        )

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if y == 0:
            style = self.get_component_rich_style("host-table--header")
            text = " " + self.line_text(self.columns)
        else:
            index = scroll_y + y - 1
            if index >= len(self.rows):
                return Strip.blank(width, self.rich_style)
            if index == self.cursor:
                style = self.get_component_rich_style("host-table--cursor")
            elif index % 2:
                style = self.get_component_rich_style("host-table--even")
            else:
                style = self.rich_style
            text = " " + self.line_text(self.rows[index].cells())
        text = text[scroll_x : scroll_x + width].ljust(width)
        return Strip([Segment(text, style or Style())], width)

    def watch_cursor(self, old: int, new: int) -> None:
        self.scroll_to_cursor()
        self.refresh()
        self.post_message(self.Highlighted(self.selected_alias()))

    def scroll_to_cursor(self) -> None:
        visible = max(1, self.size.height - 1)
        top = self.scroll_offset.y
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False)

    def action_move(self, delta: int) -> None:
        if self.rows:
            self.cursor = max(0, min(len(self.rows) - 1, self.cursor + delta))

    def action_page(self, direction: int) -> None:
        self.action_move(direction * max(1, self.size.height - 2))

    def action_jump(self, where: int) -> None:
        if self.rows:
            self.cursor = where if where >= 0 else len(self.rows) - 1

    def on_click(self, event: events.Click) -> None:
        index = self.scroll_offset.y + event.y - 1
        if event.y >= 1 and 0 <= index < len(self.rows):
            self.cursor = index
