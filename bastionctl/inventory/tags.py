"""Grammar for EC2 tag values, which anyone with ec2:CreateTags can write.

Stricter than the config checks: a value must be a plain token that means the same thing in
ssh config (no `%` tokens, quotes, `#`, `=`, whitespace), in a hosts file and on a command line.
Each check returns the normalised value or raises ValueError with a reason that never repeats
the value itself. Alias, user and fqdn use the config's own checks (bastionctl.validate).
"""

from __future__ import annotations

import re

from bastionctl import validate

KEY_PATH_RE = re.compile(r"(~/)?[A-Za-z0-9._+/-]{1,255}")
KEY_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
PORT_RE = re.compile(r"[0-9]{1,5}")
INSTANCE_ID_RE = re.compile(r"i-[0-9a-f]{8,32}")
VPC_ID_RE = re.compile(r"vpc-[0-9a-f]{8,32}")
ACCOUNT_RE = re.compile(r"[0-9]{12}")
PLATFORM_RE = re.compile(r"[A-Za-z0-9 ./()_+-]{1,80}")
SHOWN_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
HOST_ADDRESSES = ("ipv6", "ipv4", "fqdn")
BASTION_ADDRESSES = ("public", "ipv6", "ipv4", "fqdn")


def is_alias(value: str) -> bool:
    return validate.ALIAS_RE.fullmatch(value) is not None


def port(value: str) -> int:
    if not PORT_RE.fullmatch(value) or not 1 <= int(value) <= 65535:
        raise ValueError("must be a port number from 1 to 65535")
    return int(value)


def key_path(value: str) -> str:
    if not KEY_PATH_RE.fullmatch(value) or value.startswith("-"):
        raise ValueError("must be a path of letters, digits and ._+/- (optionally starting ~/)")
    return value


def key_name(value: str) -> str:
    if not KEY_NAME_RE.fullmatch(value):
        raise ValueError("must be letters, digits, '.', '_' or '-'")
    return value


def role(value: str) -> str:
    if value not in ("bastion", "host"):
        raise ValueError("must be 'bastion' or 'host'")
    return value


def address(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}")
    return value


def shown(value: str) -> str:
    """A value safe to repeat in a warning, or a description of it."""
    return repr(value) if SHOWN_RE.fullmatch(value) else f"a value of {len(value)} characters"
