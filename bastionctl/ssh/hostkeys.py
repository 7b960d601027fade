"""Host key checks against known_hosts files: unknown or changed keys are refused, never added."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import paramiko

from bastionctl.errors import ConfigError, HostKeyError


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class KnownHosts:
    def __init__(self, files: Sequence[Path]) -> None:
        self.files = tuple(files)
        self._keys = paramiko.HostKeys()
        for path in self.files:
            if not path.exists():
                continue
            try:
                self._keys.load(str(path))
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read known_hosts {path}: {exc}") from None

    def known_types(self, names: Iterable[str]) -> list[str]:
        types: list[str] = []
        for name in names:
            entry = self._keys.lookup(name)
            if entry:
                types.extend(t for t in entry if t not in types)
        return types

    def verify(self, alias: str, names: Sequence[str], key: paramiko.PKey) -> None:
        """Accept `key` only if known_hosts lists it for one of `names` (first is shown)."""
        offered = key.get_name()
        shown = names[0]
        where = ", ".join(str(f) for f in self.files) or "no known_hosts file"
        other_types: list[str] = []
        for name in names:
            entry = self._keys.lookup(name)
            if not entry:
                continue
            if offered in entry:
                if entry[offered] == key:
                    return
                raise HostKeyError(
                    f"HOST KEY CHANGED for {alias} ({shown}): known_hosts has "
                    f"{fingerprint(entry[offered])}, the server offered {fingerprint(key)}; "
                    "nothing was sent",
                    f"if the change is expected, remove the old entry with "
                    f"`ssh-keygen -R {name}` and add the new key after checking it",
                )
            other_types.extend(entry.keys())
        if other_types:
            raise HostKeyError(
                f"{alias} ({shown}) offered a {offered} key {fingerprint(key)} but known_hosts "
                f"only has {', '.join(sorted(set(other_types)))} for it; refusing",
                "check the key with the server's administrator before adding it",
            )
        raise HostKeyError(
            f"unknown host key for {alias} ({shown}): {offered} {fingerprint(key)} is not in "
            f"{where}; refusing to connect",
            f"verify the fingerprint out of band, then add it, e.g. "
            f"`ssh-keyscan -t {offered.removeprefix('ssh-')} {_keyscan_target(shown)}` "
            f">> {self.files[0] if self.files else '~/.ssh/known_hosts'}",
        )


def _keyscan_target(name: str) -> str:
    if name.startswith("[") and "]:" in name:
        host, port = name[1:].split("]:", 1)
        return f"-p {port} {host}"
    return name
