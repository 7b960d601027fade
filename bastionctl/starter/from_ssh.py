"""Bastions and hosts from a user's ssh config: every host that jumps through one bastion.

Each value goes through the config's own checks (the entry is rendered as TOML and parsed as a
hand-written config would be); what fails is left out with a line naming the host and why.
"""

from __future__ import annotations

import getpass
import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastionctl.config import parse_config
from bastionctl.errors import ConfigError
from bastionctl.starter.sshconf import Directive, Options, SshConfig, is_wildcard
from bastionctl.starter.toml import tables

# OpenSSH's options that take no argument and that change nothing bastionctl imports.
_SSH_FLAGS = set("46AaCfGgKkMNnqsTtVvXxYy")


@dataclass(frozen=True)
class Jump:
    host: str
    user: str | None = None
    port: int | None = None


@dataclass
class Imported:
    bastions: dict[str, dict[str, Any]] = field(default_factory=dict)
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    wildcard_blocks: int = 0
    no_jump: list[str] = field(default_factory=list)
    match_blocks: list[str] = field(default_factory=list)

    def summary(self, source: str) -> str:
        bastions, hosts = len(self.bastions), len(self.hosts)
        parts = [
            f"imported {bastions} bastion{'s' * (bastions != 1)} and "
            f"{hosts} host{'s' * (hosts != 1)} from {source}"
        ]
        if self.wildcard_blocks:
            n = self.wildcard_blocks
            parts.append(f"skipped {n} wildcard block{'s' * (n != 1)}")
        if self.no_jump:
            n = len(self.no_jump)
            parts.append(
                f"skipped {n} host{'s' * (n != 1)} without a jump ({', '.join(self.no_jump)})"
            )
        if self.match_blocks:
            n = len(self.match_blocks)
            parts.append(
                f"{n} Match block{'s' * (n != 1)} not imported ({', '.join(self.match_blocks)})"
            )
        if self.warnings:
            n = len(self.warnings)
            parts.append(f"{n} not imported (above)")
        return "; ".join(parts)


class Skip(Exception):
    """This entry cannot be imported; the message says why."""


def parse_jump(text: str) -> Jump:
    """One ProxyJump hop: `[user@]host[:port]`, `[user@][v6]:port` or `ssh://...`."""
    spec = text[len("ssh://") :] if text.startswith("ssh://") else text
    user, at, host = spec.rpartition("@")
    port: str | None = None
    if host.startswith("["):
        inside, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise Skip(f"ProxyJump {text!r} is not [user@]host[:port]")
        host, port = inside, rest[1:] or None
    elif host.count(":") == 1:
        host, port = host.split(":")
    if not host or (at and not user):
        raise Skip(f"ProxyJump {text!r} is not [user@]host[:port]")
    return Jump(host, user or None, _port(port, f"ProxyJump {text!r}"))


def _port(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise Skip(f"{what} has no valid port")
    return int(value)


def parse_proxy_command(command: str) -> Jump:
    """`ssh [-l USER] [-p PORT] [-q] -W %h:%p [USER@]HOST`, the older spelling of ProxyJump."""
    form = "ProxyCommand is not of the form `ssh -W %h:%p HOST`"
    try:
        argv = shlex.split(command)
    except ValueError:
        raise Skip(form) from None
    if not argv or Path(argv[0]).name not in ("ssh", "ssh.exe"):
        raise Skip(form)
    user: str | None = None
    port: str | None = None
    forward: str | None = None
    destinations: list[str] = []
    args = iter(argv[1:])
    for arg in args:
        if not arg.startswith("-") or arg == "-":
            destinations.append(arg)
            continue
        option, value = arg[1:2], arg[2:]
        if option in ("l", "p", "W", "i"):
            value = value or next(args, "")
            if option == "l":
                user = value
            elif option == "p":
                port = value
            elif option == "W":
                forward = value
            # -i: the key for the bastion; bastionctl takes the bastion's IdentityFile.
        elif not set(arg[1:]) <= _SSH_FLAGS:
            raise Skip(f"{form} (it has {arg})")
    if forward not in ("%h:%p", "[%h]:%p") or len(destinations) != 1:
        raise Skip(form)
    jump = parse_jump(destinations[0])
    return Jump(jump.host, user or jump.user, _port(port, "ProxyCommand") or jump.port)


def _expand(value: str, tokens: dict[str, str], what: str) -> str:
    def replace(match: re.Match[str]) -> str:
        token = match.group(1)
        if token not in tokens:
            raise Skip(f"{what} uses %{token}, which bastionctl does not expand")
        return tokens[token]

    return re.sub(r"%(.)", replace, value)


def address_fields(name: str) -> dict[str, str]:
    """Where a HostName points: `ipv6`, `ipv4`, a dotted DNS name as `fqdn`, else `hostname`."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return {"fqdn" if "." in name else "hostname": name}
    return {"ipv6" if address.version == 6 else "ipv4": name}


class Importer:
    def __init__(self, config: SshConfig, target: Path, local_user: str | None = None) -> None:
        self.ssh = config
        self.target = target
        self.local_user = local_user or getpass.getuser()
        self.result = Imported()
        self._bastion_keys: dict[tuple[str, str, int], str] = {}
        self._bastion_failed: dict[tuple[str, str, int], str] = {}
        self._names: set[str] = set()

    def run(self) -> Imported:
        names: dict[str, Directive] = {}
        for d in self.ssh.walk():
            if d.keyword == "match":
                self.result.match_blocks.append(d.where)
            elif d.keyword == "host":
                concrete = [p for p in d.args if not is_wildcard(p)]
                if not concrete:
                    self.result.wildcard_blocks += 1
                for name in concrete:
                    names.setdefault(name, d)
        self._names = set(names)
        no_jump: list[str] = []
        for name, directive in names.items():
            options = self.ssh.options(name)
            if options.proxy is None or options.proxy.args[0].lower() == "none":
                no_jump.append(name)
                continue
            try:
                self.host(name, options)
            except Skip as exc:
                self.result.warnings.append(f"host {name} ({directive.where}) not imported: {exc}")
        bastion_names = {key[0] for key in self._bastion_keys}
        self.result.no_jump = [n for n in no_jump if n not in bastion_names]
        return self.result

    def host(self, name: str, options: Options) -> None:
        proxy = options.proxy
        assert proxy is not None
        if proxy.keyword == "proxyjump":
            hops = proxy.args[0].split(",")
            if len(hops) > 1:
                raise Skip(f"multi-hop ProxyJump {proxy.args[0]} (bastionctl jumps once)")
            jump = parse_jump(hops[0])
        else:
            jump = parse_proxy_command(proxy.raw)
        bastion = self.bastion(jump)
        table = self.endpoint(name, options)
        table["bastion"] = bastion
        self.check({"bastions": {bastion: self.result.bastions[bastion]}, "hosts": {name: table}})
        self.result.hosts[name] = table

    def endpoint(
        self, name: str, options: Options, user: str | None = None, port: int | None = None
    ) -> dict[str, Any]:
        user = user or options.first("user") or self.local_user
        tokens = {"%": "%", "h": name, "n": name}
        hostname = _expand(options.first("hostname") or name, tokens, "HostName")
        tokens.update(
            h=hostname, r=user, u=self.local_user, d=str(self.ssh.home).replace("\\", "/")
        )
        table: dict[str, Any] = {**address_fields(hostname), "user": user}
        port = port or _port(options.first("port"), "Port")
        if port and port != 22:
            table["port"] = port
        identities = [i for i in options.multi.get("identityfile", []) if i.lower() != "none"]
        if identities:
            table["identity_file"] = _expand(identities[0], tokens, "IdentityFile")
        alias = options.first("hostkeyalias")
        if alias:
            table["host_key_alias"] = alias
        return table

    def bastion(self, jump: Jump) -> str:
        """The alias of the bastion `jump` reaches (added on first use)."""
        options = self.ssh.options(jump.host)
        user = jump.user or options.first("user") or self.local_user
        port = jump.port or _port(options.first("port"), "Port") or 22
        key = (jump.host, user, port)
        if key in self._bastion_failed:
            raise Skip(self._bastion_failed[key])
        if key in self._bastion_keys:
            return self._bastion_keys[key]
        try:
            if options.proxy is not None and options.proxy.args[0].lower() != "none":
                raise Skip(
                    f"its jump host {jump.host} jumps again (multi-hop, bastionctl jumps once)"
                )
            table = self.endpoint(jump.host, options, user, port)
            alias = self._bastion_alias(jump.host, user)
            self.check({"bastions": {alias: table}}, f"bastion {jump.host}")
        except Skip as exc:
            self._bastion_failed[key] = str(exc)
            raise
        self._bastion_keys[key] = alias
        self.result.bastions[alias] = table
        return alias

    def _bastion_alias(self, host: str, user: str) -> str:
        """The jump host's own name when its block is in the config and free, else one made
        from its name (first label) or address."""
        try:
            ipaddress.ip_address(host)
            base = "bastion-" + re.sub(r"[^A-Za-z0-9]+", "-", host).strip("-")
        except ValueError:
            base = host if self._has_block(host) else host.split(".")[0]
        taken = set(self.result.bastions) | (self._names - {host})
        for candidate in (base, f"{base}-{user}", *(f"{base}-{n}" for n in range(2, 100))):
            if candidate not in taken:
                return candidate
        raise Skip(f"no free alias for the jump host {host}")  # pragma: no cover

    def _has_block(self, host: str) -> bool:
        return any(d.keyword == "host" and host in d.args for d in self.ssh.walk())

    def check(self, document: dict[str, Any], what: str | None = None) -> None:
        """The entries as a hand-written config: rendered, then parsed by config.py."""
        try:
            parse_config(tables(document), self.target)
        except ConfigError as exc:
            why = re.sub(rf"^{re.escape(str(self.target))}(:\d+)?: ", "", exc.message)
            raise Skip(f"{what}: {why}" if what else why) from None
