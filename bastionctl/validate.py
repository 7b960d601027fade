"""Grammar checks for values that end up in ssh config, hosts files or commands.

Each check returns the normalised value or raises ValueError with a short reason.
"""

from __future__ import annotations

import ipaddress
import re

ALIAS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
SERVICE_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def alias(value: str) -> str:
    if not ALIAS_RE.fullmatch(value):
        raise ValueError("must be letters, digits, '.', '_' or '-' (at most 63, no leading symbol)")
    return value


def user(value: str) -> str:
    if not USER_RE.fullmatch(value):
        raise ValueError("must be a POSIX-style user name (letters, digits, '_', '.', '-')")
    return value


def fqdn(value: str) -> str:
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253 or not all(LABEL_RE.fullmatch(p) for p in name.split(".")):
        raise ValueError("must be a DNS name (RFC 1123 labels separated by dots)")
    return name.lower()


def ipv6(value: str) -> str:
    try:
        return str(ipaddress.IPv6Address(value))
    except ValueError:
        raise ValueError("must be an IPv6 address such as 2001:db8::2") from None


def ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError("must be an IPv4 address such as 192.0.2.10") from None


def hostname(value: str) -> str:
    """An IP literal (no brackets) or a DNS name."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    try:
        return fqdn(value)
    except ValueError:
        raise ValueError("must be an IPv4/IPv6 address or a DNS name") from None


def port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError("must be an integer from 1 to 65535")
    return value


def path(value: str) -> str:
    if not value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must be a non-empty path without control characters")
    if any(c.isspace() for c in value):
        raise ValueError("must not contain whitespace (ssh config cannot carry it safely)")
    return value


def service_name(value: str) -> str:
    if not SERVICE_RE.fullmatch(value):
        raise ValueError("must be lower-case letters, digits, '_' or '-'")
    return value
