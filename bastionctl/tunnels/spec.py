"""From a request (host, service, ports) to a TunnelSpec."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from bastionctl.config import Config
from bastionctl.errors import UsageError
from bastionctl.model import Host, Service, TunnelSpec
from bastionctl.tunnels.ports import PortBook, Remembered
from bastionctl.tunnels.protocol import TunnelRequest

RAW_PORT_BASE = 50000


def find_host(config: Config, alias: str) -> Host:
    inventory = config.inventory
    if alias in inventory.hosts:
        host = inventory.hosts[alias]
        if host.ambiguous:
            raise UsageError(
                f"host {alias} has an ambiguous bastion: {' or '.join(host.ambiguous_bastions)}",
                f"tag the instance {config.inventory_settings.tag_prefix}bastion=BASTION "
                "to choose one, or declare the right one in the config's [bastions]",
            )
        return host
    if alias in inventory.bastions:
        raise UsageError(
            f"{alias} is a bastion; tunnels go to a host behind it",
            f"hosts: {', '.join(sorted(inventory.hosts)) or 'none'}",
        )
    names = sorted(inventory.hosts)
    hint = f"valid hosts: {', '.join(names)}" if names else "the inventory has no hosts"
    raise UsageError(f"unknown host '{alias}'", hint)


def check_bind(bind: str, allow_non_loopback: bool) -> str:
    if bind == "localhost":
        return bind
    try:
        address = ipaddress.ip_address(bind)
    except ValueError:
        raise UsageError(f"--bind {bind!r} is not an IP address") from None
    if not address.is_loopback and not allow_non_loopback:
        raise UsageError(
            f"--bind {bind} would expose the tunnel beyond this machine",
            "add --allow-non-loopback if that is really wanted",
        )
    return str(address)


def build_spec(config: Config, request: TunnelRequest) -> TunnelSpec:
    """Everything checked (host, service, bind) before any process is started or login made."""
    service = config.services.get(request.service) if request.service else None
    host = find_host(config, request.host)
    port = service.remote_port if service else request.remote_port
    if port is None:
        raise UsageError("a raw tunnel needs REMOTE_PORT")
    local_port = request.local_port
    if local_port is None:
        local_port = choose_local_port(host, service, port).port
    return TunnelSpec(
        host=host,
        bastion=config.inventory.bastion_for(host),
        remote_port=port,
        local_port=local_port,
        bind=check_bind(request.bind or config.settings.bind, request.allow_non_loopback),
        service=service,
        local_port_fixed=request.local_port is not None,
    )


@dataclass(frozen=True)
class PortChoice:
    port: int
    scheme: int  # what the scheme alone would give
    source: str  # "config", "remembered" or "scheme"
    remembered: Remembered | None = None


def choose_local_port(host: Host, service: Service | None, remote_port: int) -> PortChoice:
    """The config's port for this host and service, else the remembered one, else the scheme's."""
    name = service.name if service else f"port-{remote_port}"
    scheme = service.local_port if service else default_raw_local_port(remote_port)
    configured = host.configured_port(name)
    if configured is not None:
        return PortChoice(configured, scheme, "config")
    entry = PortBook().entry(port_key(host.alias, name))
    if entry is not None:
        return PortChoice(entry.port, scheme, "remembered", entry)
    return PortChoice(scheme, scheme, "scheme")


def remembered_note(spec: TunnelSpec) -> str | None:
    """One line when a remembered port, not the scheme's, is used: why, and how to go back."""
    if spec.local_port_fixed:
        return None
    choice = choose_local_port(spec.host, spec.service, spec.remote_port)
    entry = choice.remembered
    if entry is None or choice.port != spec.local_port or entry.port == choice.scheme:
        return None
    instead = f"the scheme's {choice.scheme}" if choice.scheme else "one the OS picks"
    return (
        f"{entry.key} uses remembered local port {entry.port} ({entry.reason}) instead of "
        f"{instead}; go back with `bastionctl tunnel ports --forget {entry.key}`"
    )


def default_raw_local_port(remote_port: int) -> int:
    """The seed's scheme (3389 -> 53389) where it fits; the OS picks otherwise."""
    return RAW_PORT_BASE + remote_port if remote_port <= 65535 - RAW_PORT_BASE else 0


def port_key(host: str, service: str) -> str:
    return f"{host}/{service}"


def spec_key(spec: TunnelSpec) -> str:
    return port_key(
        spec.host.alias, spec.service.name if spec.service else f"port-{spec.remote_port}"
    )
