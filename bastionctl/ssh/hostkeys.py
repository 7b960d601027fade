"""Host key checks against known_hosts files: unknown, changed or revoked keys are refused,
never added.

Each file is read line by line, as OpenSSH reads it (sshd(8), SSH_KNOWN_HOSTS FILE FORMAT):

- `NAMES KEYTYPE BASE64 [COMMENT]`: a key for the hosts NAMES lists. A name vouches for a key
  only when it is the looked-up name itself (case-insensitive) or its hashed form (`|1|...`,
  `ssh-keygen -H`). Wildcard patterns (`*`, `?`) never vouch for a key here (stricter than
  OpenSSH, which honours them); a negated pattern (`!pattern`, wildcards allowed) that matches
  takes the line out for that name, as in OpenSSH.
- `@revoked NAMES KEYTYPE BASE64`: that key is refused for every name NAMES matches,
  wildcards included (`@revoked * ssh-ed25519 ...` revokes it everywhere), even where another
  line lists it as valid.
- `@cert-authority ...`: skipped with a debug note; bastionctl does not use host certificates.
- Anything else that does not parse (too few fields, bad base64, a key type paramiko cannot
  read, an unknown `@marker`, a malformed hashed name) is skipped with a debug note naming
  FILE:LINE, never an error: one odd line does not make the other keys unusable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.pkey import UnknownKeyType

from bastionctl.errors import ConfigError, HostKeyError
from bastionctl.model import Endpoint
from bastionctl.ssh.pinned import MARK

log = logging.getLogger(__name__)

REVOKED = "@revoked"
CERT_AUTHORITY = "@cert-authority"


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_key_names(endpoint: Endpoint) -> list[str]:
    """The names known_hosts may list `endpoint`'s key under, as OpenSSH looks it up.

    Its `host_key_alias` alone when the config sets one (OpenSSH's HostKeyAlias: instead of
    the address, used as written, no port added); otherwise the address bastionctl connects
    to (`[address]:port` unless the port is 22). Never the endpoint's alias or an fqdn it is
    not reached by: for EC2 hosts those come from tags, which anyone with ec2:CreateTags sets.
    """
    if endpoint.host_key_alias:
        return [endpoint.host_key_alias]
    return [endpoint.known_hosts_name]


@dataclass(frozen=True)
class _Hashed:
    salt: bytes
    digest: bytes

    def matches(self, name: str) -> bool:
        mine = hmac.new(self.salt, name.encode("utf-8"), hashlib.sha1).digest()
        return hmac.compare_digest(mine, self.digest)


@dataclass(frozen=True)
class Entry:
    """One usable line: its names, key, whether it revokes the key, and where it is."""

    patterns: tuple[str | _Hashed, ...]
    key: paramiko.PKey
    revoked: bool
    path: Path
    line: int
    # The `# bastionctl ORIGIN AT k=v...` comment above a line bastionctl pinned, split.
    pinned: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def origin(self) -> str:
        """Where the key came from, for a person: EC2's console output, a person's `yes`, or
        a known_hosts file bastionctl does not manage."""
        if not self.pinned:
            return "an entry of your own"
        kind, at = self.pinned[0], self.pinned[1] if len(self.pinned) > 1 else "-"
        details = dict(item.partition("=")[::2] for item in self.pinned[2:])
        when = f" on {at}" if at != "-" else ""
        if kind == "ec2-console":
            instance = details.get("instance")
            return f"pinned from EC2's console output{' of ' + instance if instance else ''}{when}"
        if kind == "accepted":
            return f"accepted by a person{when}"
        return "added by hand"

    def matches(self, name: str) -> bool:
        """Whether this line applies to `name` (wildcards vouch only on @revoked lines)."""
        lowered = name.lower()
        matched = False
        for pattern in self.patterns:
            if isinstance(pattern, _Hashed):
                matched = matched or pattern.matches(name)
            elif pattern.startswith("!"):
                if _glob(pattern[1:].lower()).fullmatch(lowered):
                    return False
            elif self.revoked:
                matched = matched or bool(_glob(pattern.lower()).fullmatch(lowered))
            else:
                matched = matched or pattern.lower() == lowered
        return matched


def _glob(pattern: str) -> re.Pattern[str]:
    """OpenSSH's host pattern: `*` any run of characters, `?` one, nothing else special."""
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    )


class _Skip(ValueError):
    pass


def _hashed(pattern: str) -> _Hashed:
    parts = pattern.split("|")
    if len(parts) != 4 or parts[:2] != ["", "1"] or not parts[2] or not parts[3]:
        raise _Skip("a hashed name that is not |1|SALT|HASH")
    try:
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError):
        raise _Skip("a hashed name that is not base64") from None
    if len(salt) != 20 or len(digest) != 20:
        raise _Skip("a hashed name of the wrong length")
    return _Hashed(salt, digest)


def parse_line(text: str, path: Path, number: int, pinned: tuple[str, ...] = ()) -> Entry | None:
    """The line's entry; None for a blank line, a comment or a line to skip (logged).
    `pinned`: the fields of a bastionctl comment just above it."""
    fields = text.split()
    if not fields or fields[0].startswith("#"):
        return None
    where = f"{path}:{number}"
    revoked = False
    if fields[0].startswith("@"):
        if fields[0] == CERT_AUTHORITY:
            log.debug("known_hosts %s: @cert-authority line skipped (no host certificates)", where)
            return None
        if fields[0] != REVOKED:
            log.debug("known_hosts %s: skipped: unknown marker", where)
            return None
        revoked = True
        fields = fields[1:]
    try:
        if len(fields) < 3:
            raise _Skip("not NAMES KEYTYPE KEY")
        names, key_type, data = fields[:3]
        patterns: list[str | _Hashed] = []
        for name in names.split(","):
            if not name:
                raise _Skip("an empty name")
            patterns.append(_hashed(name) if name.startswith("|") else name)
        try:
            blob = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise _Skip("the key is not base64") from None
        try:
            key = paramiko.PKey.from_type_string(key_type, blob)
        except UnknownKeyType:
            raise _Skip(f"key type {key_type!r} is not one bastionctl reads") from None
        except Exception:  # paramiko's parsers raise many kinds on a damaged key
            raise _Skip("the key does not parse (or is not of the type the line says)") from None
    except _Skip as exc:
        log.debug("known_hosts %s: skipped: %s", where, exc)
        return None
    if not revoked and any(isinstance(p, str) and ("*" in p or "?" in p) for p in patterns):
        log.debug("known_hosts %s: wildcard names do not vouch for a key here", where)
    return Entry(tuple(patterns), key, revoked, path, number, pinned)


class UnknownHostKey(HostKeyError):
    """No known_hosts file lists any key for the host: first contact, which a person may
    accept (ssh.first_contact); every other refusal is final."""


class KnownHosts:
    def __init__(self, files: Sequence[Path]) -> None:
        self.files = tuple(files)
        self.entries: list[Entry] = []
        for path in self.files:
            if not path.exists():
                continue
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise ConfigError(f"cannot read known_hosts {path}: {exc}") from None
            comment: tuple[str, ...] = ()
            for number, line in enumerate(text.splitlines(), start=1):
                if line.startswith(MARK):
                    comment = tuple(line[len(MARK) :].split())
                    continue
                entry = parse_line(line, path, number, comment)
                comment = ()
                if entry is not None:
                    self.entries.append(entry)

    def add(self, entry: Entry) -> None:
        """A key accepted while running: known from now on, as if read from its file."""
        self.entries.append(entry)

    def _valid(self, names: Iterable[str]) -> list[Entry]:
        wanted = list(names)
        return [e for e in self.entries if not e.revoked and any(e.matches(n) for n in wanted)]

    def revoked_entry(self, names: Iterable[str], key: paramiko.PKey) -> Entry | None:
        """The @revoked line that revokes `key` for one of `names`, if any."""
        wanted = list(names)
        blob = key.asbytes()
        for entry in self.entries:
            if entry.revoked and entry.key.asbytes() == blob and any(map(entry.matches, wanted)):
                return entry
        return None

    def known_types(self, names: Iterable[str]) -> list[str]:
        """Key types listed as valid for `names` (revoked keys left out), first seen first."""
        wanted = list(names)
        types: list[str] = []
        for entry in self._valid(wanted):
            kind = entry.key.get_name()
            if kind not in types and self.revoked_entry(wanted, entry.key) is None:
                types.append(kind)
        return types

    def verify(
        self,
        alias: str,
        names: Sequence[str],
        key: paramiko.PKey,
        address: str | None = None,
    ) -> None:
        """Accept `key` only if known_hosts lists it for one of `names` (the first is shown)
        and no @revoked line revokes it for them or for `address` (the `[address]:port` form
        connected to, named in the hints; default: the first name)."""
        offered = key.get_name()
        shown = names[0]
        address = address or shown
        checked = [*names, *([address] if address not in names else [])]
        revoked = self.revoked_entry(checked, key)
        if revoked is not None:
            raise HostKeyError(
                f"the host key {fingerprint(key)} of {alias} ({shown}) is revoked in "
                f"{revoked.where}; refusing",
                "nothing was sent; ask the server's administrator for its current key",
            )
        where = ", ".join(str(f) for f in self.files) or "no known_hosts file"
        valid = self._valid(names)
        blob = key.asbytes()
        if any(entry.key.asbytes() == blob for entry in valid):
            return
        same_type = [entry for entry in valid if entry.key.get_name() == offered]
        if same_type:
            old = same_type[0]
            listed = next(n for n in names if old.matches(n))
            raise HostKeyError(
                f"HOST KEY CHANGED for {alias} ({shown}): known_hosts ({old.where}, "
                f"{old.origin}) has {fingerprint(old.key)}, the server offered "
                f"{fingerprint(key)}; nothing was sent",
                _changed_hint(alias, listed, old),
            )
        if valid:
            old = valid[0]
            others = ", ".join(
                f"{e.key.get_name()} {fingerprint(e.key)} ({e.where}, {e.origin})" for e in valid
            )
            raise HostKeyError(
                f"{alias} ({shown}) offered a {offered} key {fingerprint(key)} but known_hosts "
                f"only has {others}; refusing",
                "check the key with the server's administrator before adding it",
            )
        target = self.files[0] if self.files else "~/.ssh/known_hosts"
        scan = f"ssh-keyscan -t {offered.removeprefix('ssh-')} {_keyscan_target(address)}"
        if shown != address:  # a host_key_alias: the key goes in under that name
            scan += f" | awk '{{print \"{shown}\", $2, $3}}'"
        raise UnknownHostKey(
            f"unknown host key for {alias} ({shown}): {offered} {fingerprint(key)} is not in "
            f"{where}; refusing to connect",
            f"verify the fingerprint out of band, then add it, e.g. `{scan}` >> {target}",
        )


def _changed_hint(alias: str, listed: str, old: Entry) -> str:
    if old.pinned[:1] == ("ec2-console",):
        return (
            "if the instance was rebuilt, `bastionctl known-hosts sync` pins the keys EC2 "
            "attests now; otherwise ask its administrator"
        )
    if old.pinned:
        return (
            f"if the change is expected, `bastionctl known-hosts forget {alias}` and connect "
            "again to check and accept the new key"
        )
    return (
        f"if the change is expected, remove the old entry with "
        f"`ssh-keygen -f {old.path} -R {listed}` and add the new key after checking it"
    )


def _keyscan_target(name: str) -> str:
    if name.startswith("[") and "]:" in name:
        host, port = name[1:].split("]:", 1)
        return f"-p {port} {host}"
    return name
