"""The bastion's /etc/hosts lines and the same records for dnsmasq and a BIND zone."""

from __future__ import annotations

import ipaddress
import time

from bastionctl import validate
from bastionctl.model import Endpoint, Inventory


def _records(inventory: Inventory, ipv4: bool) -> list[tuple[str, str, str]]:
    """(address, fqdn, alias) per endpoint, IPv6 first; unsafe names are left out, and so are
    addresses that are not plain IP literals: one with a zone id (fe80::1%eth0) names an
    interface of this machine, which means nothing in the bastion's hosts file or in DNS."""
    records = []
    endpoints: list[Endpoint] = [
        *sorted(inventory.bastions.values(), key=lambda e: e.alias),
        # A host whose bastion is ambiguous has no bastion to resolve its names on.
        *sorted((h for h in inventory.hosts.values() if not h.ambiguous), key=lambda e: e.alias),
    ]
    for endpoint in endpoints:
        try:
            alias = validate.alias(endpoint.alias)
            fqdn = validate.fqdn(endpoint.fqdn) if endpoint.fqdn else ""
        except ValueError:
            continue
        for address in (endpoint.ipv6, endpoint.ipv4 if ipv4 else None):
            literal = _plain_ip(address) if address else None
            if literal:
                records.append((literal, fqdn, alias))
    return records


def _plain_ip(value: str) -> str | None:
    """The IP literal, normalised; None for anything else (a name, a zone id, junk)."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if getattr(address, "scope_id", None) is not None:
        return None
    return str(address)


def hosts_file(inventory: Inventory, ipv4: bool = False) -> str:
    lines = ["# bastionctl: bastion /etc/hosts entries"]
    for address, fqdn, alias in _records(inventory, ipv4):
        names = " ".join(n for n in (fqdn, alias) if n)
        lines.append(f"{address:<39} {names}")
    return "\n".join(lines) + "\n"


def dnsmasq(inventory: Inventory, ipv4: bool = False) -> str:
    lines = ["# bastionctl: dnsmasq host records"]
    for address, fqdn, alias in _records(inventory, ipv4):
        names = ",".join(n for n in (fqdn, alias) if n)
        lines.append(f"host-record={names},{address}")
    return "\n".join(lines) + "\n"


def zone(inventory: Inventory, domain: str, ipv4: bool = True, serial: int | None = None) -> str:
    origin = validate.fqdn(domain)
    serial = serial if serial is not None else int(time.time())
    lines = [
        f"$ORIGIN {origin}.",
        "$TTL 300",
        f"@ IN SOA localhost. hostmaster.{origin}. ({serial} 3600 600 86400 300)",
        # An out-of-zone name server needs no glue; the records are what matters here.
        "@ IN NS localhost.",
    ]
    for address, fqdn, _alias in _records(inventory, ipv4):
        if not fqdn or not (fqdn == origin or fqdn.endswith("." + origin)):
            continue
        name = "@" if fqdn == origin else fqdn[: -len(origin) - 1]
        kind = "AAAA" if ":" in address else "A"
        lines.append(f"{name} IN {kind} {address}")
    return "\n".join(lines) + "\n"
