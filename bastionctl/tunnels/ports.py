"""The local port each host and service got last time, kept across runs."""

from __future__ import annotations

import json
from pathlib import Path

from bastionctl import paths
from bastionctl.system.files import private_dir
from bastionctl.system.locks import file_lock


class PortBook:
    """The local port each host+service got last time, so clients' saved settings keep working."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.state_dir() / "ports.json"

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, int) and 0 < v < 65536}

    def get(self, key: str) -> int | None:
        return self._read().get(key)

    def remember(self, key: str, port: int, replace: bool) -> None:
        """Record `port` for `key`; without `replace`, only when nothing is recorded yet."""
        private_dir(self.path.parent)
        with file_lock(self.path.with_suffix(".lock")):
            data = self._read()
            if data.get(key) == port or (key in data and not replace):
                return
            data[key] = port
            from bastionctl.atomic import write_atomic

            write_atomic(self.path, json.dumps(data, sort_keys=True, indent=1) + "\n")
