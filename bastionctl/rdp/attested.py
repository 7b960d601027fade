"""The RDP certificate thumbprints EC2 attests (an instance's console output, read by
`known-hosts sync`), kept per instance in a JSON file of bastionctl's own (0600, beside the
managed known_hosts):

    {"certificates": [{"instance_id": "i-0abc…", "alias": "server-03",
                       "thumbprint": "3F2A…", "at": "2026-12-01T12:00:00Z",
                       "source": "prod", "region": "eu-west-1"}]}

An instance id is the key: an alias is a tag and may move to another instance.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bastionctl import paths
from bastionctl.atomic import write_atomic
from bastionctl.errors import ConfigError
from bastionctl.model import Endpoint
from bastionctl.system.locks import holding

log = logging.getLogger(__name__)

_THUMBPRINT = re.compile(r"[0-9A-F]{40}")
_INSTANCE = re.compile(r"i-[0-9a-f]{8,32}")
_TOKEN = re.compile(r"[A-Za-z0-9._:@%+-]{1,200}")
_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@dataclass(frozen=True)
class Attested:
    instance_id: str
    alias: str
    thumbprint: str  # SHA-1 of the certificate's DER, upper-case hex
    at: str  # when `known-hosts sync` read it (UTC)
    source: str | None = None
    region: str | None = None

    @property
    def origin(self) -> str:
        return f"EC2 console output of {self.instance_id}, read {self.at}"


def default_path() -> Path:
    return paths.data_dir() / "rdp_certificates.json"


def _entry(raw: Any) -> Attested | None:
    """One entry as read, or None when any field is not what bastionctl writes."""
    if not isinstance(raw, dict):
        return None
    fields = {k: raw.get(k) for k in ("instance_id", "alias", "thumbprint", "at")}
    optional = {k: raw.get(k) for k in ("source", "region")}
    checks = (
        (fields["instance_id"], _INSTANCE),
        (fields["alias"], _TOKEN),
        (fields["thumbprint"], _THUMBPRINT),
        (fields["at"], _AT),
    )
    if not all(isinstance(v, str) and pattern.fullmatch(v) for v, pattern in checks):
        return None
    if not all(
        v is None or (isinstance(v, str) and _TOKEN.fullmatch(v)) for v in optional.values()
    ):
        return None
    return Attested(**fields, **optional)  # type: ignore[arg-type]


def read(path: Path | None = None) -> list[Attested]:
    """The thumbprints recorded (none when the file does not exist); entries that are not
    what bastionctl writes are left out (logged), a file that is not JSON is an error."""
    path = path or default_path()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("certificates"), list):
        raise ConfigError(
            f"{path} is not bastionctl's list of RDP certificates",
            "remove it and run `bastionctl known-hosts sync` again",
        )
    entries: list[Attested] = []
    for index, raw in enumerate(data["certificates"]):
        entry = _entry(raw)
        if entry is None:
            log.debug("%s: entry %d left out: not what bastionctl writes", path, index)
        else:
            entries.append(entry)
    return entries


def write(entries: Iterable[Attested], path: Path | None = None) -> Path:
    path = path or default_path()
    body = {"certificates": [asdict(e) for e in sorted(entries, key=lambda e: e.instance_id)]}
    write_atomic(path, json.dumps(body, indent=2) + "\n", 0o600)
    return path


@contextmanager
def locked(path: Path | None = None, timeout: float = 30.0) -> Iterator[Path]:
    """Held around each read-modify-write of the file (`known-hosts sync`, `forget`)."""
    path = path or default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    hint = "try again once its `known-hosts sync` is done"
    with holding(path.with_name(path.name + ".lock"), path, timeout, hint):
        yield path


def valid(entry: Attested) -> bool:
    """Whether `entry` is one `read` would keep (so `record` may write it)."""
    return _entry(asdict(entry)) is not None


def record(new: Iterable[Attested], path: Path | None = None) -> list[tuple[Attested, Attested]]:
    """Record `new` (one per instance, replacing an older thumbprint of the same instance;
    an unchanged thumbprint keeps its first date). Returns the (old, new) pairs that changed.
    ValueError for an entry that is not `valid`."""
    new = list(new)
    for entry in new:
        if not valid(entry):
            raise ValueError(f"not an RDP certificate entry bastionctl keeps: {entry!r}")
    changed: list[tuple[Attested, Attested]] = []
    with locked(path) as where:
        entries = {e.instance_id: e for e in read(where)}
        before = dict(entries)
        for entry in new:
            old = entries.get(entry.instance_id)
            if old is not None and old.thumbprint == entry.thumbprint:
                entries[entry.instance_id] = Attested(**{**asdict(entry), "at": old.at})
                continue
            if old is not None:
                changed.append((old, entry))
            entries[entry.instance_id] = entry
        if entries != before or (entries and not where.exists()):
            write(entries.values(), where)
    return changed


def forget(endpoint: Endpoint | None, name: str, path: Path | None = None) -> int:
    """Drop the thumbprint of `endpoint`'s instance (or, for a name no longer in the
    inventory, those recorded under alias or instance id `name`); how many were dropped."""
    instance = endpoint.origin.instance_id if endpoint and endpoint.origin else None
    if not (path or default_path()).exists():
        return 0  # nothing recorded: no lock file or data directory made for it
    with locked(path) as where:
        entries = read(where)
        kept = [
            e
            for e in entries
            if e.instance_id != instance
            and (endpoint is not None or name not in (e.alias, e.instance_id))
        ]
        if len(kept) != len(entries):
            write(kept, where)
    return len(entries) - len(kept)


def for_endpoint(endpoint: Endpoint, path: Path | None = None) -> Attested | None:
    """The thumbprint EC2 attests for `endpoint`'s instance, if `known-hosts sync` read one."""
    if endpoint.origin is None:
        return None
    return next((e for e in read(path) if e.instance_id == endpoint.origin.instance_id), None)
