"""SSH host keys (and an RDP certificate thumbprint) from an EC2 instance's console output.

cloud-init prints the host keys between `-----BEGIN SSH HOST KEY KEYS-----` and
`-----END SSH HOST KEY KEYS-----`, their fingerprints between `-----BEGIN SSH HOST KEY
FINGERPRINTS-----` and `-----END SSH HOST KEY FINGERPRINTS-----`; Amazon Linux puts `ec2: ` (or
another logger prefix) in front of every such line, Windows prints `RDPCERTIFICATE-THUMBPRINT:`.

The console is untrusted text: whoever runs code on the instance writes to it, boot after boot,
and the API returns its tail. So only the last complete key block counts; a block that is cut
off, lists a key that does not parse, or disagrees with its fingerprint block gives no key at
all (with the reason), never a partial set. Key types are checked against a short list, blobs
are parsed as the type they claim, and every size is bounded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field

import paramiko

KEYS_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
KEYS_END = "-----END SSH HOST KEY KEYS-----"
FPS_BEGIN = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
FPS_END = "-----END SSH HOST KEY FINGERPRINTS-----"
THUMBPRINT = "RDPCERTIFICATE-THUMBPRINT:"

# The API returns at most 64 KiB of output; anything far beyond that is not a console.
MAX_OUTPUT = 1 << 20
MAX_LINE = 16_384  # an RSA-16384 key line is ~2.8 KiB
MAX_KEYS = 16
MAX_PREFIX = 64

# The key types bastionctl pins, and the label ssh-keygen -l prints for each.
KEY_TYPES = {
    "ssh-ed25519": "ED25519",
    "ecdsa-sha2-nistp256": "ECDSA",
    "ecdsa-sha2-nistp384": "ECDSA",
    "ecdsa-sha2-nistp521": "ECDSA",
    "ssh-rsa": "RSA",
}
# Looks like a key type (ssh-dss, sk-..., certificates): skipped with a note, not noise.
_TYPE_LIKE = re.compile(r"(?:ssh|ecdsa|sk|rsa)-[a-z0-9@.+-]{1,60}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_FP_LINE = re.compile(
    r"(?P<bits>\d{2,5}) (?P<fp>SHA256:[A-Za-z0-9+/]{43}|(?:MD5:)?[0-9a-f]{2}(?::[0-9a-f]{2}){15})"
    r"(?: .*)? \((?P<label>[A-Z0-9-]{2,20})\)"
)
_THUMBPRINT = re.compile(r"[0-9A-Fa-f]{40}")


@dataclass(frozen=True)
class ConsoleKey:
    key_type: str
    blob: bytes

    @property
    def base64(self) -> str:
        return base64.b64encode(self.blob).decode()

    @property
    def sha256(self) -> str:
        return sha256_fingerprint(self.blob)

    @property
    def md5(self) -> str:
        digest = hashlib.md5(self.blob, usedforsecurity=False).hexdigest()
        return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))

    @property
    def label(self) -> str:
        return KEY_TYPES[self.key_type]


@dataclass
class ConsoleKeys:
    """What one console output attests. `keys` is empty whenever `problem` is set."""

    keys: list[ConsoleKey] = field(default_factory=list)
    # Why nothing is pinned although there was a key block (cut off, inconsistent, bad key).
    problem: str | None = None
    # Whether a key block was there at all (False: nothing to report but "no block").
    found: bool = False
    # Whether a fingerprint block confirmed the keys.
    cross_checked: bool = False
    # What was left out without making the block unusable (ssh-dss, unknown types).
    notes: list[str] = field(default_factory=list)
    rdp_thumbprint: str | None = None


def sha256_fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def console_text(output: object) -> str:
    """The `Output` of a GetConsoleOutput answer as text: botocore has already decoded the
    API's base64 (undecodable bytes replaced); '' when the instance has printed nothing yet."""
    if output is None:
        return ""
    if not isinstance(output, str):
        raise ValueError("the console output is not text")
    return output[-MAX_OUTPUT:]


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


@dataclass
class _Block:
    begin: int  # line index of the BEGIN marker
    end: int | None  # line index of the END marker; None when cut off
    prefix: str
    body: list[str]


def _blocks(lines: list[str], begin: str, end: str) -> list[_Block]:
    """Every BEGIN..END block, with the prefix its BEGIN line had stripped from its body."""
    blocks: list[_Block] = []
    current: _Block | None = None
    for index, raw in enumerate(lines):
        line = raw.rstrip()
        if begin in line:
            prefix = line[: line.index(begin)]
            if len(prefix) > MAX_PREFIX:
                continue
            if current is not None:  # a BEGIN before the previous END: that one was cut off
                blocks.append(current)
            current = _Block(index, None, prefix, [])
        elif current is not None and end in line:
            current.end = index
            blocks.append(current)
            current = None
        elif current is not None and line.startswith(current.prefix):
            # A line without the prefix is other output interleaved (kernel, systemd): noise.
            current.body.append(line[len(current.prefix) :].strip())
    if current is not None:
        blocks.append(current)
    return blocks


def _parse_keys(body: list[str]) -> tuple[list[ConsoleKey], list[str], str | None]:
    keys: list[ConsoleKey] = []
    notes: list[str] = []
    for line in body:
        if not line:
            continue
        if len(line) > MAX_LINE:
            return [], notes, "a line of the key block is too long"
        fields = line.split()
        kind = fields[0]
        if kind not in KEY_TYPES:
            if _TYPE_LIKE.fullmatch(kind):
                notes.append(f"a {kind[:60]} key was skipped (not a type bastionctl pins)")
            continue  # anything else is interleaved output, not a key line
        if len(fields) < 2 or not _BASE64.fullmatch(fields[1]):
            return [], notes, f"the {kind} key line is cut off or not base64"
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except (binascii.Error, ValueError):
            return [], notes, f"the {kind} key is not base64"
        if not _parses_as(kind, blob):
            return [], notes, f"the {kind} key does not parse as one (cut off or damaged)"
        key = ConsoleKey(kind, blob)
        if key not in keys:
            keys.append(key)
        if len(keys) > MAX_KEYS:
            return [], notes, f"the key block lists more than {MAX_KEYS} keys"
    return keys, notes, None


def _parses_as(kind: str, blob: bytes) -> bool:
    try:
        key = paramiko.PKey.from_type_string(kind, blob)
    except Exception:  # paramiko's parsers raise many kinds on a damaged key
        return False
    return key.get_name() == kind and key.asbytes() == blob


def _cross_check(keys: list[ConsoleKey], body: list[str]) -> str | None:
    """Why the fingerprint block disagrees with the keys; None when it agrees.

    For every key type (ssh-keygen's label: ED25519, ECDSA, RSA) both blocks list, the sets of
    fingerprints must be the same; a type only one block lists (DSA, which cloud-init prints
    fingerprints of but not keys) is not compared.
    """
    listed: dict[str, set[str]] = {}
    for line in body:
        match = _FP_LINE.fullmatch(line)
        if match:
            fp = match["fp"]
            if not fp.startswith("SHA256:"):
                fp = fp.removeprefix("MD5:")
            listed.setdefault(match["label"], set()).add(fp)
    for label in sorted({k.label for k in keys} & set(listed)):
        mine = [k for k in keys if k.label == label]
        theirs = listed[label]
        sha = {k.sha256 for k in mine}
        md5 = {k.md5 for k in mine}
        for fp in sorted(theirs):
            if fp not in sha and fp not in md5:
                return f"the fingerprint block lists {label} {fp}, which no listed key has"
        for key in mine:
            if key.sha256 not in theirs and key.md5 not in theirs:
                return f"the {label} key {key.sha256} is not in the fingerprint block"
    return None


def parse(text: str) -> ConsoleKeys:
    """The host keys and RDP thumbprint the console `text` (decoded) attests."""
    if len(text) > MAX_OUTPUT:
        text = text[-MAX_OUTPUT:]  # the tail is the latest boot
    lines = _lines(text)
    result = ConsoleKeys(rdp_thumbprint=_thumbprint(lines))
    key_blocks = _blocks(lines, KEYS_BEGIN, KEYS_END)
    if not key_blocks:
        return result
    result.found = True
    last = key_blocks[-1]
    if last.end is None:
        result.problem = "the last host key block is cut off (no END line)"
        return result
    keys, notes, problem = _parse_keys(last.body)
    result.notes = notes
    if problem is None and not keys:
        problem = "the last host key block lists no key bastionctl pins"
    if problem is not None:
        result.problem = problem
        return result
    # The fingerprints of the same boot: the last block before these keys, after the previous
    # key block; one begun after them belongs to a later boot whose keys were cut off.
    floor = key_blocks[-2].end if len(key_blocks) > 1 and key_blocks[-2].end is not None else -1
    fp_blocks = _blocks(lines, FPS_BEGIN, FPS_END)
    if any(b.begin > last.end for b in fp_blocks):
        result.problem = "a later boot's fingerprint block follows the last key block"
        return result
    same_boot = [b for b in fp_blocks if floor < b.begin < last.begin]
    if same_boot:
        fps = same_boot[-1]
        if fps.end is None:
            result.problem = "the fingerprint block before the keys is cut off"
            return result
        problem = _cross_check(keys, fps.body)
        if problem is not None:
            result.problem = problem
            return result
        result.cross_checked = True
    result.keys = keys
    return result


def _thumbprint(lines: list[str]) -> str | None:
    found: str | None = None
    for line in lines:
        if THUMBPRINT in line and len(line) <= MAX_LINE:
            value = line.split(THUMBPRINT, 1)[1].strip()
            found = value.upper() if _THUMBPRINT.fullmatch(value) else None
    return found
