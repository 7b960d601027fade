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
# An IPv6 zone id (`fe80::1%eth0`, `%12` on Windows): an interface name as Linux allows at most
# (IFNAMSIZ is 16 with the NUL) in the characters interface names use in practice. ipaddress
# takes any text after the `%`, newlines included; nothing else may reach a file or a command.
ZONE_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
# OpenSSH's HostKeyAlias as bastionctl accepts it: a name or address (no patterns, no `%`),
# or `[name]:port` as known_hosts writes a non-22 port. Lower-cased, as ssh does.
HOST_KEY_ALIAS_RE = re.compile(
    r"(?![-.])[a-z0-9._:-]{1,253}|\[(?![-.])[a-z0-9._:-]{1,253}\]:[1-9][0-9]{0,4}"
)
# What ssh config carries in a path without escapes (a space only inside double quotes):
# letters and digits of any script (a Windows profile may be C:\Users\José), _ . / ~ + @ : , % -
SSH_PATH_RE = re.compile(r"[\w./~+@:,% -]+")
# A drive letter and a separator, or a UNC share (two backslashes, then the server).
WINDOWS_ABSOLUTE_RE = re.compile(r"[A-Za-z]:[\\/]|\\\\[^\\/]")


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
        address = ipaddress.IPv6Address(value)
    except ValueError:
        raise ValueError("must be an IPv6 address such as 2001:db8::2") from None
    return _zone_checked(address)


def _zone_checked(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The address as text; a zone id only if it is a plain interface name (ZONE_RE)."""
    zone = getattr(address, "scope_id", None)
    if zone is not None and not ZONE_RE.fullmatch(zone):
        raise ValueError(
            "has a zone id (after %) that is not an interface name "
            "(letters, digits, '_', '.', '-'; at most 15)"
        )
    return str(address)


def ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError("must be an IPv4 address such as 192.0.2.10") from None


def hostname(value: str) -> str:
    """An IP literal (no brackets; an IPv6 zone id only as ZONE_RE allows) or a DNS name."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return _zone_checked(address)
    try:
        return fqdn(value)
    except ValueError:
        raise ValueError("must be an IPv4/IPv6 address or a DNS name") from None


def host_key_alias(value: str) -> str:
    """The name known_hosts lists a host's key under instead of its address (HostKeyAlias)."""
    name = value.lower()
    if not HOST_KEY_ALIAS_RE.fullmatch(name) or (
        name.startswith("[") and int(name.rpartition(":")[2]) > 65535
    ):
        raise ValueError(
            "must be a host name or address (letters, digits, '.', '_', '-', ':'), "
            "or [name]:port; no patterns"
        )
    return name


def port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError("must be an integer from 1 to 65535")
    return value


def is_windows_absolute(value: str) -> bool:
    """`C:\\...`, `C:/...` or a UNC path: absolute on Windows, whatever OS this is."""
    return WINDOWS_ABSOLUTE_RE.match(value) is not None


def path(value: str, *, backslash_separates: bool = False) -> str:
    """A file path as ssh config carries it: returned with `/` as its separator.

    The same check serves the config (a bad value is a config error) and the ssh config
    renderer (which never writes a value this refuses), so what one accepts the other can
    write. A backslash separates in a Windows absolute path (`C:\\Users\\me\\.ssh\\id`), and
    in any path when `backslash_separates` (on Windows); elsewhere it is refused, as ssh
    config would read it as an escape. Spaces are allowed inside (the path is then written
    in double quotes); quotes, `#`, `=` and other characters ssh config gives a meaning are
    not. `%` is allowed (written as `%%` where ssh would expand it).
    """
    if not value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must be a non-empty path without control characters")
    if "\\" in value:
        if not (backslash_separates or is_windows_absolute(value)):
            raise ValueError(
                "has a backslash, a separator only in Windows paths such as "
                "C:\\Users\\me\\.ssh\\id (write / here)"
            )
        value = value.replace("\\", "/")
    if value != value.strip(" "):
        raise ValueError("must not start or end with a space")
    if not SSH_PATH_RE.fullmatch(value):
        raise ValueError(
            "may only have letters, digits, spaces and _ . / ~ + @ : , % - "
            "(ssh config cannot carry others safely)"
        )
    return value


def service_name(value: str) -> str:
    if not SERVICE_RE.fullmatch(value):
        raise ValueError("must be lower-case letters, digits, '_' or '-'")
    return value
