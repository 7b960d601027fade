"""From a request (host, service, ports) to a TunnelSpec; remembered local ports; summaries."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import time
from pathlib import Path
from typing import Any

from bastionctl import paths
from bastionctl.config import Config
from bastionctl.errors import UsageError
from bastionctl.model import Host, TunnelSpec

RAW_PORT_BASE = 50000


def find_host(config: Config, alias: str) -> Host:
    inventory = config.inventory
    if alias in inventory.hosts:
        return inventory.hosts[alias]
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


def build_spec(
    config: Config,
    host_alias: str,
    service_name: str | None,
    remote_port: int | None,
    local_port: int | None,
    bind: str | None,
    allow_non_loopback: bool = False,
) -> TunnelSpec:
    service = config.services.get(service_name) if service_name else None
    host = find_host(config, host_alias)
    port = service.remote_port if service else remote_port
    if port is None:
        raise UsageError("a raw tunnel needs REMOTE_PORT")
    fixed = local_port is not None
    if local_port is None:
        key = port_key(host.alias, service.name if service else f"port-{port}")
        local_port = PortBook().get(key) or (
            service.local_port if service else default_raw_local_port(port)
        )
    return TunnelSpec(
        host=host,
        bastion=config.inventory.bastion_for(host),
        remote_port=port,
        local_port=local_port,
        bind=check_bind(bind or config.settings.bind, allow_non_loopback),
        service=service,
        local_port_fixed=fixed,
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


class PortBook:
    """The local port each host+service got last time, so clients' saved settings keep working."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.state_dir() / "ports.json"

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, int) and 0 < v < 65536}

    def get(self, key: str) -> int | None:
        return self._read().get(key)

    def remember(self, key: str, port: int, replace: bool) -> None:
        """Record `port` for `key`; without `replace`, only when nothing is recorded yet."""
        paths.private_dir(self.path.parent)
        lock = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            if data.get(key) == port or (key in data and not replace):
                return
            data[key] = port
            from bastionctl.atomic import write_atomic

            write_atomic(self.path, json.dumps(data, sort_keys=True, indent=1) + "\n")
        finally:
            with contextlib.suppress(OSError):
                os.close(lock)


def describe(tunnel: Any, pid: int, kind: str) -> dict[str, Any]:
    """A tunnel as the list/JSON output shows it (`tunnel` is a ManagedTunnel)."""
    spec: TunnelSpec = tunnel.spec
    forwarder = tunnel.forwarder
    return {
        "id": f"{pid}.{tunnel.id}",
        "pid": pid,
        "process": kind,
        "service": spec.service.name if spec.service else None,
        "host": spec.host.alias,
        "bastion": spec.bastion.alias,
        "remote": f"{spec.remote_host}:{spec.remote_port}",
        "local": f"{spec.bind}:{tunnel.local_port}",
        "local_port": tunnel.local_port,
        "connection": spec.connection_string(tunnel.local_port),
        "state": tunnel.state.value,
        "started": tunnel.started,
        "uptime": round(time.time() - tunnel.started, 1),
        "bytes_in": forwarder.bytes_in,
        "bytes_out": forwarder.bytes_out,
        "connections": forwarder.active,
        "last_error": tunnel.last_error,
    }
