"""The example configs shipped in the package (bastionctl/templates/), whole or by table."""

from __future__ import annotations

import re
from importlib import resources

EXAMPLE = "example.toml"
EC2 = "ec2.toml"
NAMES = (EXAMPLE, EC2)
HEADER_RE = re.compile(r"\[\[?\s*([^\].]+)")


def text(name: str) -> str:
    return resources.files("bastionctl").joinpath("templates", name).read_text(encoding="utf-8")


def section(name: str, table: str) -> str:
    """The first `[table]` of template `name` with the comment lines just above it."""
    lines = text(name).splitlines()
    for index, line in enumerate(lines):
        match = HEADER_RE.match(line)
        if match and match.group(1).strip() == table:
            start = index
            while start > 0 and lines[start - 1].startswith("#"):
                start -= 1
            end = index + 1
            while end < len(lines) and not HEADER_RE.match(lines[end]):
                end += 1
            while end > index + 1 and (not lines[end - 1] or lines[end - 1].startswith("#")):
                end -= 1  # the next table's comments are the next table's
            return "\n".join(lines[start:end]) + "\n"
    raise KeyError(f"{name} has no [{table}]")
