"""Local ports the user chose with --local-port, kept across runs, with why and when."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastionctl import paths
from bastionctl.system.files import private_dir
from bastionctl.system.locks import file_lock

CHOSEN = "local-port"
# Entries written before the port book kept reasons: a bare number, origin unknown.
LEGACY = "legacy"


@dataclass(frozen=True)
class Remembered:
    key: str  # HOST/SERVICE, or HOST/port-N for raw tunnels
    port: int
    why: str  # CHOSEN or LEGACY
    date: str  # YYYY-MM-DD, "" when unknown

    @property
    def reason(self) -> str:
        if self.why == CHOSEN:
            return f"chosen with --local-port on {self.date or 'an unknown date'}"
        return "remembered by an earlier bastionctl (no reason recorded)"


def _entry(key: str, value: Any) -> Remembered | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"port": value, "why": LEGACY}
    if not isinstance(value, dict):
        return None
    port, why, date = value.get("port"), value.get("why"), value.get("date", "")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        return None
    if why not in (CHOSEN, LEGACY) or not isinstance(date, str):
        return None
    return Remembered(key, port, why, date)


class PortBook:
    """The local port per host+service a user chose, so clients' saved settings keep working.

    Ports the scheme or a collision gave are not kept: only a choice is worth repeating."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.state_dir() / "ports.json"

    def entries(self) -> dict[str, Remembered]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        found = {key: _entry(key, value) for key, value in data.items() if isinstance(key, str)}
        return {key: entry for key, entry in sorted(found.items()) if entry is not None}

    def get(self, key: str) -> int | None:
        entry = self.entries().get(key)
        return entry.port if entry else None

    def entry(self, key: str) -> Remembered | None:
        return self.entries().get(key)

    def remember(self, key: str, port: int, replace: bool) -> None:
        """Record a port the user chose (`replace`: it came from --local-port)."""
        if not replace:
            return
        today = datetime.date.today().isoformat()
        self._update(lambda data: data.__setitem__(key, Remembered(key, port, CHOSEN, today)))

    def forget(self, prefix: str) -> list[Remembered]:
        """Drop `HOST/SERVICE`, or every entry of `HOST`; returns what was dropped."""
        dropped: list[Remembered] = []
        wanted = prefix.lower()

        def drop(data: dict[str, Remembered]) -> None:
            for key in list(data):
                # Aliases compare without case, as ssh matches them.
                if key.lower() == wanted or key.split("/", 1)[0].lower() == wanted:
                    dropped.append(data.pop(key))

        self._update(drop)
        return dropped

    def _update(self, change: Callable[[dict[str, Remembered]], None]) -> None:
        private_dir(self.path.parent)
        with file_lock(self.path.with_suffix(".lock")):
            data = self.entries()
            before = dict(data)
            change(data)
            if data == before:
                return
            from bastionctl.atomic import write_atomic

            out = {e.key: {"port": e.port, "why": e.why, "date": e.date} for e in data.values()}
            write_atomic(self.path, json.dumps(out, sort_keys=True, indent=1) + "\n")
