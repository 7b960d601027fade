"""Grammar for EC2 tag values, which anyone with ec2:CreateTags can write.

Stricter than the config checks: a value must be a plain token that means the same thing in
ssh config (no `%` tokens, quotes, `#`, `=`, whitespace), in a hosts file and on a command line.
Each check returns the normalised value or raises ValueError with a reason that never repeats
the value itself. Alias, user and fqdn use the config's own checks (bastionctl.validate).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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


def under_domains(name: str, domains: Iterable[str]) -> bool:
    """Whether `name` is strictly under one of `domains` (lower-case DNS names): on a label
    boundary, so `web.example.com` is under `example.com`, `webexample.com` and `example.com`
    are not."""
    lowered = name.lower()
    return any(lowered.endswith("." + domain) for domain in domains)


def name(value: str, instance_id: str, domains: tuple[str, ...]) -> str:
    """A Name tag (already an alias by the grammar) that may be an alias: a dot only in a DNS
    name under one of `domains` (ssh aliases may contain dots: `Name=github.com` would
    capture `ssh github.com`), and no look of an instance id other than its own."""
    lowered = value.lower()
    if INSTANCE_ID_RE.fullmatch(lowered) and lowered != instance_id:
        raise ValueError("looks like the id of another instance")
    if "." not in value:
        return value
    if not domains:
        raise ValueError(
            "has a dot, which only names under [inventory] domains may have, and none are set"
        )
    try:
        dns_name = validate.fqdn(value)
    except ValueError:
        raise ValueError("has a dot but is not a DNS name") from None
    if dns_name != lowered or not under_domains(dns_name, domains):
        raise ValueError(f"has a dot but is not a name under {', '.join(domains)}")
    return value


def fqdn(value: str, domains: tuple[str, ...]) -> str:
    """An fqdn tag: a DNS name strictly under one of `domains` (none set: none accepted)."""
    dns_name = validate.fqdn(value)
    if not domains:
        raise ValueError("is ignored until [inventory] domains names the DNS domains it may be in")
    if not under_domains(dns_name, domains):
        raise ValueError(f"is not a name under {', '.join(domains)}")
    return dns_name
