"""The inventory as frozen data: bastions, hosts, services, tunnel specs. No I/O here."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Platform = Literal["linux", "windows"]


@dataclass(frozen=True)
class Service:
    """A TCP service reached through a tunnel: remote port on the target, default local port."""

    name: str
    remote_port: int
    local_port: int
    # Connection string for the client, `{host}` and `{port}` are the local end.
    connection: str = "{host}:{port}"
    aliases: tuple[str, ...] = ()
    description: str = ""

    def connection_string(self, host: str, port: int) -> str:
        shown = f"[{host}]" if ":" in host and "{host}:" in self.connection else host
        return self.connection.format(host=shown, port=port)


@dataclass(frozen=True)
class Origin:
    """Where an inventory entry came from when it is not the static config: an EC2 instance."""

    source: str
    instance_id: str
    region: str
    account: str | None = None
    vpc_id: str | None = None
    platform_details: str | None = None
    key_name: str | None = None
    public_ipv4: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """Something bastionctl opens an SSH connection to."""

    alias: str
    user: str
    port: int = 22
    ipv6: str | None = None
    ipv4: str | None = None
    fqdn: str | None = None
    # An explicit address or name to connect to; wins over the others when set.
    hostname: str | None = None
    identity_file: Path | None = None
    origin: Origin | None = None
    # The name known_hosts lists this endpoint's key under instead of its address, like
    # OpenSSH's HostKeyAlias. Only ever from the user's own config, never from EC2 tags.
    host_key_alias: str | None = None

    @property
    def connect_host(self) -> str:
        """The address or name used to reach this endpoint's sshd (IPv6 first)."""
        for candidate in (self.hostname, self.ipv6, self.ipv4, self.fqdn):
            if candidate:
                return candidate
        return self.alias

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH looks up in known_hosts for this endpoint's address."""
        host = self.connect_host
        return host if self.port == 22 else f"[{host}]:{self.port}"


@dataclass(frozen=True)
class Bastion(Endpoint):
    # The server rejects a TOTP code already used in its step (google-authenticator default).
    otp_single_use: bool = True


@dataclass(frozen=True)
class Host(Endpoint):
    bastion: str = ""
    platform: Platform = "linux"
    services: tuple[str, ...] = ()
    # The bastions an EC2 host could jump through when nothing chooses one (two or more in
    # its VPC, no bastion tag): then `bastion` is empty and the host is listed, but gets no
    # ssh config block, no hosts-file line and no tunnel. Empty for every other host.
    ambiguous_bastions: tuple[str, ...] = ()
    # Local ports the config sets per service (`local_ports = { mysql = 54134 }`); they beat
    # the remembered ones and the scheme's. Only ever from the user's own config.
    local_ports: tuple[tuple[str, int], ...] = ()

    def configured_port(self, service: str) -> int | None:
        return dict(self.local_ports).get(service)

    @property
    def ambiguous(self) -> bool:
        """Whether this host's bastion is ambiguous (see `ambiguous_bastions`)."""
        return bool(self.ambiguous_bastions)


@dataclass(frozen=True)
class TunnelSpec:
    """One local port forwarded through `bastion` and `host` to `remote_host:remote_port`."""

    host: Host
    bastion: Bastion
    remote_port: int
    local_port: int
    bind: str = "127.0.0.1"
    remote_host: str = "localhost"
    service: Service | None = None
    # Given explicitly: a taken port is an error instead of a reason to take the next one.
    local_port_fixed: bool = False

    @property
    def label(self) -> str:
        what = self.service.name if self.service else f"port {self.remote_port}"
        return f"{what} on {self.host.alias}"

    def connection_host(self) -> str:
        return connection_host(self.bind)

    def connection_string(self, local_port: int | None = None) -> str:
        port = self.local_port if local_port is None else local_port
        host = self.connection_host()
        if self.service is not None:
            return self.service.connection_string(host, port)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Inventory:
    bastions: Mapping[str, Bastion] = field(default_factory=dict)
    hosts: Mapping[str, Host] = field(default_factory=dict)

    def bastion_for(self, host: Host) -> Bastion:
        return self.bastions[host.bastion]

    def names(self) -> list[str]:
        return sorted([*self.bastions, *self.hosts])


def hostport(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 literal."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connection_host(bind: str) -> str:
    """The address a client on this machine uses for a listener; a literal, as SQL Server wants."""
    # A wildcard or dual-loopback listener is reachable on 127.0.0.1.
    if bind in ("0.0.0.0", "::", "", "localhost"):  # noqa: S104
        return "127.0.0.1"
    return bind


def is_loopback(bind: str) -> bool:
    """Whether a listener on `bind` is reachable from this machine only."""
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False
