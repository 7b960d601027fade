"""What the TUI shows, computed without Textual: host rows, the filter, tunnel rows."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from bastionctl.model import Bastion, Host, Inventory
from bastionctl.tunnels.protocol import TunnelInfo


@dataclass(frozen=True)
class HostRow:
    alias: str
    group: str
    role: str
    platform: str
    ipv6: str
    ipv4: str
    services: str
    region: str
    haystack: str
    # A host whose bastion is ambiguous: its group (by bastion) names the candidates.
    ambiguous: bool = False

    def cells(self) -> tuple[str, ...]:
        return (self.alias, self.group, self.platform, self.ipv6, self.ipv4, self.services)


GROUPINGS = ("bastion", "region", "role")


def host_rows(inventory: Inventory, group_by: str = "bastion") -> list[HostRow]:
    """Rows grouped by bastion, region or role (bastions first in a group), then by alias;
    by bastion, hosts whose bastion is ambiguous come last."""
    rows = [_row(b, "bastion", group_by) for b in inventory.bastions.values()]
    rows += [_row(h, "host", group_by) for h in inventory.hosts.values()]
    last = group_by == "bastion"
    rows.sort(key=lambda r: (last and r.ambiguous, r.group, r.role != "bastion", r.alias))
    return rows


def ambiguous_label(host: Host, separator: str = "|") -> str:
    return f"ambiguous: {separator.join(host.ambiguous_bastions)}"


def _row(endpoint: Bastion | Host, role: str, group_by: str) -> HostRow:
    origin = endpoint.origin
    services = ",".join(getattr(endpoint, "services", ()))
    platform = getattr(endpoint, "platform", "") if role == "host" else "bastion"
    region = origin.region if origin else "static"
    ambiguous = isinstance(endpoint, Host) and endpoint.ambiguous
    if isinstance(endpoint, Host):
        bastion = ambiguous_label(endpoint) if endpoint.ambiguous else endpoint.bastion
    else:
        bastion = endpoint.alias
    group = {"bastion": bastion, "region": region, "role": role}[group_by]
    fields = (
        endpoint.alias,
        group,
        bastion if ambiguous else "",
        platform,
        endpoint.ipv6,
        endpoint.ipv4,
        endpoint.fqdn,
        services,
        region,
    )
    return HostRow(
        alias=endpoint.alias,
        group=group,
        role=role,
        platform=platform,
        ipv6=endpoint.ipv6 or "",
        ipv4=endpoint.ipv4 or "",
        services=services,
        region=region,
        haystack=" ".join(f for f in fields if f).lower(),
        ambiguous=ambiguous,
    )


def matches(rows: Iterable[HostRow], text: str) -> list[HostRow]:
    """Rows containing every word of `text` somewhere in their fields."""
    words = text.lower().split()
    if not words:
        return list(rows)
    return [r for r in rows if all(w in r.haystack for w in words)]


def details(endpoint: Bastion | Host) -> list[tuple[str, str]]:
    origin = endpoint.origin
    pairs = [
        ("alias", endpoint.alias),
        ("role", "bastion" if isinstance(endpoint, Bastion) else "host"),
        ("platform", getattr(endpoint, "platform", "") or "-"),
        ("connects to", endpoint.connect_host),
        ("IPv6", endpoint.ipv6 or "-"),
        ("IPv4", endpoint.ipv4 or "-"),
        ("fqdn", endpoint.fqdn or "-"),
        ("user", f"{endpoint.user} (port {endpoint.port})"),
        ("key", str(endpoint.identity_file) if endpoint.identity_file else "-"),
    ]
    if isinstance(endpoint, Host):
        bastion = endpoint.bastion
        if endpoint.ambiguous:
            bastion = (
                f"{ambiguous_label(endpoint, ' or ')}; no ssh config or tunnel until a bastion "
                "tag or the config chooses one"
            )
        pairs += [("bastion", bastion), ("services", ", ".join(endpoint.services) or "-")]
    if origin is not None:
        pairs += [
            ("source", f"ec2 {origin.source}"),
            ("instance", origin.instance_id),
            ("region", origin.region),
            ("VPC", origin.vpc_id or "-"),
            ("public IPv4", origin.public_ipv4 or "-"),
            ("platform details", origin.platform_details or "-"),
        ]
    else:
        pairs.append(("source", "config"))
    return pairs


def size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def uptime(started: float, now: float | None = None) -> str:
    seconds = int((time.time() if now is None else now) - started)
    hours, rest = divmod(max(0, seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def tunnel_cells(info: TunnelInfo, now: float | None = None) -> tuple[str, ...]:
    """One row of the tunnel panel."""
    return (
        str(info.id),
        info.service or f"port {info.remote_port}",
        info.host,
        info.connection,
        info.state.value,
        uptime(info.started, now),
        size(info.bytes_in),
        size(info.bytes_out),
        str(info.connections),
        info.waiting_for or info.error_summary() or "",
    )
