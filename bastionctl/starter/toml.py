"""TOML for the starter config: values written so that tomllib reads back exactly them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def value(item: Any) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, str):
        # A JSON string is a TOML basic string, except that TOML wants DEL escaped too.
        return json.dumps(item, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(item, Sequence):
        return "[" + ", ".join(value(v) for v in item) + "]"
    if isinstance(item, Mapping):
        return "{ " + ", ".join(f"{key(k)} = {value(v)}" for k, v in item.items()) + " }"
    raise TypeError(f"no TOML for {type(item).__name__}")


def key(name: str) -> str:
    return name if BARE_KEY_RE.fullmatch(name) else value(name)


def table(header: str, fields: Mapping[str, Any]) -> str:
    lines = [header, *(f"{key(k)} = {value(v)}" for k, v in fields.items())]
    return "\n".join(lines) + "\n"


def tables(document: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """`{"hosts": {"web": {...}}}` as `[hosts.web]` tables, one blank line between them."""
    return "\n".join(
        table(f"[{key(section)}.{key(name)}]", fields)
        for section, named in document.items()
        for name, fields in named.items()
    )
