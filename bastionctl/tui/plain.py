"""Text from outside bastionctl (tags, servers, other processes) as a Rich renderable that is
never parsed as markup."""

from __future__ import annotations

from rich.text import Text

from bastionctl import sanitise


def cell(value: str) -> Text:
    """A table cell: sanitised to one line, plain text."""
    return Text(sanitise.line(value), end="")
