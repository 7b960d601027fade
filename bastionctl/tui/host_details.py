"""The details of the selected host."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from bastionctl import sanitise
from bastionctl.model import Bastion, Host
from bastionctl.tui.rows import details


class HostDetails(Static):
    pairs: list[tuple[str, str]] = []
    alias: str | None = None

    def show(self, endpoint: Bastion | Host | None, dns_pending: bool = False) -> None:
        if endpoint is None:
            self.pairs = []
            self.alias = None
            self.update("no host selected")
            return
        self.alias = endpoint.alias
        self.pairs = details(endpoint)
        if endpoint.fqdn and dns_pending:
            self.pairs.append(("DNS", "checking…"))
        self.draw()

    def show_dns(self, alias: str, summary: str) -> None:
        """The DNS check result, if the same host is still shown."""
        if alias != self.alias:
            return
        self.pairs = [p for p in self.pairs if p[0] != "DNS"] + [("DNS", summary)]
        self.draw()

    def draw(self) -> None:
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold")
        table.add_column()
        for name, value in self.pairs:
            # Values come from tags, DNS answers: plain, sanitised text, never markup.
            table.add_row(Text(name), Text(sanitise.line(value)))
        self.update(table)
