"""The known_hosts file bastionctl manages: keys EC2 attested (`known-hosts sync`) or a person
accepted, each line after a comment saying where it came from and when.

It is an ordinary known_hosts file (one of the default `known_hosts` files, so bastionctl and
the exported ssh config both read it); the comments are for `known-hosts list`:

    # bastionctl ec2-console 2024-05-01T12:00:00Z alias=server-02 instance=i-0abc region=eu-west-1
    [fd00::2] ssh-ed25519 AAAAC3Nz...

A line without such a comment (added by hand) is kept, with origin `unknown`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bastionctl import paths
from bastionctl.atomic import write_atomic
from bastionctl.errors import ConfigError
from bastionctl.model import Endpoint
from bastionctl.system.locks import holding

EC2_CONSOLE = "ec2-console"
ACCEPTED = "accepted"
UNKNOWN = "unknown"
ORIGINS = (EC2_CONSOLE, ACCEPTED)
MARK = "# bastionctl "
HEADER = (
    "# Host keys bastionctl pinned: `bastionctl known-hosts list` shows them, "
    "`known-hosts forget HOST` drops them.\n"
)
# Comment values are ours or EC2's (instance ids, regions, aliases): one token each.
_TOKEN = re.compile(r"[A-Za-z0-9._:@%+\[\]-]{1,200}")
_KEY_TYPE = re.compile(r"[a-z0-9@.-]{1,64}")
_NAME = re.compile(r"[^\s,#]{1,300}")


@dataclass(frozen=True)
class Pin:
    name: str  # what known_hosts lists it under (the address connected to, or host_key_alias)
    key_type: str
    key_base64: str
    origin: str = UNKNOWN
    at: str | None = None  # UTC, ISO 8601
    details: tuple[tuple[str, str], ...] = field(default=())

    @property
    def blob(self) -> bytes:
        return base64.b64decode(self.key_base64)

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def detail(self, key: str) -> str | None:
        return dict(self.details).get(key)

    def lines(self) -> list[str]:
        comment = [f"{MARK}{self.origin} {self.at or '-'}"]
        comment += [f"{k}={v}" for k, v in self.details if _TOKEN.fullmatch(v)]
        return [" ".join(comment), f"{self.name} {self.key_type} {self.key_base64}"]


def now_utc(clock: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if clock is None else clock))


def pin(
    name: str, key_type: str, key_base64: str, origin: str, at: str, **details: str | None
) -> Pin:
    """A new pin; `name`, type and key are checked, details without a value left out."""
    if not _NAME.fullmatch(name) or not _KEY_TYPE.fullmatch(key_type):
        raise ValueError(f"cannot pin a key under {name!r}")
    try:
        base64.b64decode(key_base64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key is not base64") from None
    kept = tuple((k, v) for k, v in details.items() if v and _TOKEN.fullmatch(v))
    return Pin(name, key_type, key_base64, origin, at, kept)


def read(path: Path | None = None) -> list[Pin]:
    """The pins of the managed file (none when it does not exist)."""
    path = path or paths.managed_known_hosts()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    pins: list[Pin] = []
    comment: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(MARK):
            comment = line[len(MARK) :].split()
            continue
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) >= 3 and _NAME.fullmatch(fields[0]) and _KEY_TYPE.fullmatch(fields[1]):
            origin, at = UNKNOWN, None
            details: tuple[tuple[str, str], ...] = ()
            if comment:
                origin = comment[0] if comment[0] in ORIGINS else UNKNOWN
                at = comment[1] if len(comment) > 1 and comment[1] != "-" else None
                pairs = (item.partition("=") for item in comment[2:])
                details = tuple((k, v) for k, sep, v in pairs if sep)
            pins.append(Pin(fields[0], fields[1], fields[2], origin, at, details))
        comment = None
    return pins


def write(pins: Iterable[Pin], path: Path | None = None) -> Path:
    """Replace the managed file with `pins` (atomically, 0600)."""
    path = path or paths.managed_known_hosts()
    body = "".join("\n".join(p.lines()) + "\n" for p in pins)
    write_atomic(path, HEADER + body, 0o600)
    return path


@contextmanager
def locked(path: Path | None = None, timeout: float = 30.0) -> Iterator[Path]:
    """Held around each read-modify-write of the managed file: `known-hosts sync`, `forget`
    and a key accepted at first contact (the agent, the TUI and a CLI may do it at once)."""
    path = path or paths.managed_known_hosts()
    path.parent.mkdir(parents=True, exist_ok=True)
    hint = "try again once its `known-hosts sync` is done"
    with holding(path.with_name(path.name + ".lock"), path, timeout, hint):
        yield path


def add(new: Pin, path: Path | None = None) -> Path:
    """`new` appended to the managed file (under its lock) unless the same key is there."""
    with locked(path) as where:
        pins = read(where)
        if not any(
            p.name.lower() == new.name.lower() and p.key_base64 == new.key_base64 for p in pins
        ):
            write([*pins, new], where)
    return where


def replace_for(pins: list[Pin], name: str, new: Iterable[Pin]) -> tuple[list[Pin], list[Pin]]:
    """`pins` with every pin under `name` replaced by `new`; also the pins dropped."""
    fresh = list(new)
    mine = [p for p in pins if p.name.lower() == name.lower()]
    dropped = [p for p in mine if all(p.key_base64 != f.key_base64 for f in fresh)]
    return [p for p in pins if p not in mine] + fresh, dropped


def key_states(
    endpoints: Iterable[Endpoint], files: Sequence[Path], managed: Path | None = None
) -> dict[str, str]:
    """Each endpoint's host-key state: `attested` (EC2's console vouches for a pinned key),
    `pinned` (a known_hosts file lists a key: the user's own, or one accepted), `unknown`."""
    from bastionctl.ssh.hostkeys import KnownHosts, host_key_names

    managed = managed or paths.managed_known_hosts()
    pins = read(managed) if managed in files else []
    known = KnownHosts(files)
    states: dict[str, str] = {}
    for endpoint in endpoints:
        names = host_key_names(endpoint)
        lowered = {n.lower() for n in names}
        if any(p.origin == EC2_CONSOLE and p.name.lower() in lowered for p in pins):
            states[endpoint.alias] = "attested"
        elif known.known_types(names):
            states[endpoint.alias] = "pinned"
        else:
            states[endpoint.alias] = "unknown"
    return states
