"""A ready-made setup: a 2FA bastion, two private targets behind it, services behind them.

    server-01  bastion; users op (google-authenticator defaults: no reuse, 3 logins per
               30 s) and bulk (no reuse ban, no rate limit); key AND TOTP code
    server-02  target, publickey only, users op and bulk; reachable only through the
    server-03  bastion's direct-tcpip (by alias or by 127.0.0.1:its port)
    services   echo, sink, source, greeter on 127.0.0.1 (what the targets forward to), and
               `refused`: a port where nothing listens

The directory holds the client identity files (id_<alias>, OpenSSH Ed25519, mode 0600) and
a known_hosts with the three host keys; config_text() is a bastionctl config for all this.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pyotp

from tests.ssh.faults import FaultProxy
from tests.ssh.server import (
    MAX_PACKET_SIZE,
    WINDOW_SIZE,
    Forward,
    SshServer,
    UserRule,
    new_ed25519,
)
from tests.ssh.services import Service, free_port, refused_port, start_services

BASTION = "server-01"
TARGETS = ("server-02", "server-03")
USERS = ("op", "bulk")
SERVICE_KINDS = ("echo", "sink", "source", "greeter")
# What the config lists for each target: every service, and `refused` (nothing listens).
HOST_SERVICES = ("echo", "greeter", "sink", "source", "refused")
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr")
TIMEOUT = 5.0


def client_transport(
    sock: socket.socket | paramiko.Channel, host_key: paramiko.PKey | None = None
) -> paramiko.Transport:
    """A started client transport over `sock`; checks the server's key when given."""
    transport = paramiko.Transport(
        sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE
    )
    options = transport.get_security_options()
    ciphers = list(options.ciphers)
    options.ciphers = [c for c in PREFERRED_CIPHERS if c in ciphers] + [
        c for c in ciphers if c not in PREFERRED_CIPHERS
    ]
    try:
        transport.start_client(timeout=TIMEOUT)
        if host_key is not None and transport.get_remote_server_key() != host_key:
            raise paramiko.SSHException("the server offered an unexpected host key")
    except BaseException:
        transport.close()
        raise
    return transport


def tcp(port: int, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


Answerer = Callable[[str, str, list[tuple[str, bool]]], list[str]]


def answers(*codes: str) -> Answerer:
    """A keyboard-interactive handler answering each prompt with the next code."""
    pending = list(codes)

    def handler(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
        return [pending.pop(0) if pending else "" for _prompt in prompts]

    return handler


@dataclass
class World:
    root: Path
    bastion: SshServer
    targets: dict[str, SshServer]
    services: dict[str, Service]
    refused: int
    client_keys: dict[str, paramiko.PKey]  # alias -> the client's identity for it
    identity_files: dict[str, Path]
    known_hosts: Path
    secrets: dict[str, str]  # user -> base32 TOTP secret on the bastion
    _stopped: bool = field(default=False, repr=False)

    @classmethod
    def start(cls, root: Path) -> World:
        """Everything started and written under `root`; stop() it (also on failure)."""
        root.mkdir(parents=True, exist_ok=True)
        started: list[SshServer | Service] = []
        try:
            services = start_services(SERVICE_KINDS)
            started.extend(services.values())
            client_keys: dict[str, paramiko.PKey] = {}
            identity_files: dict[str, Path] = {}
            for alias in (BASTION, *TARGETS):
                key, text = new_ed25519()
                path = root / f"id_{alias}"
                path.touch(mode=0o600)
                path.chmod(0o600)
                path.write_text(text)
                client_keys[alias] = key
                identity_files[alias] = path
            targets: dict[str, SshServer] = {}
            for alias in TARGETS:
                keys = [client_keys[alias]]
                target = SshServer(alias, {user: UserRule(list(keys)) for user in USERS})
                target.start()
                started.append(target)
                targets[alias] = target
            secrets = {user: pyotp.random_base32() for user in USERS}
            bastion_key = [client_keys[BASTION]]
            users = {
                "op": UserRule(list(bastion_key), totp_secret=secrets["op"]),
                "bulk": UserRule(
                    list(bastion_key),
                    totp_secret=secrets["bulk"],
                    disallow_reuse=False,
                    rate_limit=None,
                ),
            }
            bastion = SshServer(BASTION, users, forward=_to_targets(targets))
            bastion.start()
            started.append(bastion)
            known_hosts = root / "known_hosts"
            lines = [bastion.known_hosts_line()] + [t.known_hosts_line() for t in targets.values()]
            known_hosts.write_text("\n".join(lines) + "\n")
        except BaseException:
            for thing in reversed(started):
                thing.stop()
            raise
        return cls(
            root,
            bastion,
            targets,
            services,
            refused_port(),
            client_keys,
            identity_files,
            known_hosts,
            secrets,
        )

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for server in (self.bastion, *self.targets.values()):
            server.stop()
        for service in self.services.values():
            service.stop()

    # --- what a test needs to know -------------------------------------------------------

    def servers(self) -> dict[str, SshServer]:
        return {BASTION: self.bastion, **self.targets}

    def service_port(self, name: str) -> int:
        """The real port on 127.0.0.1 of a service ("refused": nothing listens there)."""
        return self.refused if name == "refused" else self.services[name].port

    def secret(self, user: str) -> str:
        return self.secrets[user]

    def totp_code(self, user: str) -> str:
        return str(pyotp.TOTP(self.secrets[user]).now())

    def store_secret(self, user: str) -> None:
        """The user's secret in the keyring, as `bastionctl otp set server-01` stores it."""
        from bastionctl.otp import SecretStore, parse_secret

        SecretStore().set(BASTION, parse_secret(self.secrets[user]))

    def known_hosts_via(self, port: int, path: Path) -> Path:
        """The world's known_hosts at `path`, plus the bastion's key at 127.0.0.1:`port`.

        bastionctl looks a bastion up as `[127.0.0.1]:PORT`, like OpenSSH, so through a proxy
        in front of the bastion it needs the key listed under the proxy's port too (as if the
        user had reached the bastion there).
        """
        path.write_text(self.known_hosts.read_text() + self.bastion.known_hosts_line(port) + "\n")
        return path

    def config_text(
        self,
        user: str = "bulk",
        *,
        bastion_port: int | None = None,
        known_hosts: Path | None = None,
        persist: float | None = None,
    ) -> str:
        """A bastionctl config as `user`; `bastion_port` points it at e.g. a FaultProxy.

        `known_hosts` replaces the world's (see known_hosts_via for a bastion behind a proxy);
        `persist`, if given, is the agent's [settings] persist.
        """
        if user not in USERS:
            raise ValueError(f"user must be one of {', '.join(USERS)}")
        lines = [
            "# Written by tests.ssh.world: paramiko test servers on 127.0.0.1.",
            "[settings]",
            f"known_hosts = [{_toml(known_hosts or self.known_hosts)}]",
            "connect_timeout = 5",
            "keepalive_interval = 1",
            *([f"persist = {persist}"] if persist is not None else []),
            "",
            f"[bastions.{BASTION}]",
            'ipv4 = "127.0.0.1"',
            f"port = {bastion_port or self.bastion.port}",
            f'user = "{user}"',
            f"identity_file = {_toml(self.identity_files[BASTION])}",
        ]
        if user == "bulk":
            lines.append("otp_single_use = false")
        services = ", ".join(f'"{s}"' for s in HOST_SERVICES)
        for alias, target in self.targets.items():
            lines += [
                "",
                f"[hosts.{alias}]",
                'ipv4 = "127.0.0.1"',
                f"port = {target.port}",
                f'user = "{user}"',
                f"identity_file = {_toml(self.identity_files[alias])}",
                f'bastion = "{BASTION}"',
                'platform = "linux"',
                f"services = [{services}]",
            ]
        for name in (*SERVICE_KINDS, "refused"):
            # local_port = 0 (the OS picks) is refused by bastionctl's validation (1-65535),
            # so each config gets ports that are free right now.
            lines += [
                "",
                f"[services.{name}]",
                f"port = {self.service_port(name)}",
                f"local_port = {free_port()}",
                f'description = "test {name} service"',
            ]
        return "\n".join(lines) + "\n"

    def write_config(
        self,
        path: Path,
        user: str = "bulk",
        *,
        bastion_port: int | None = None,
        persist: float | None = None,
    ) -> Path:
        """The config at `path`; with `bastion_port` (a proxy in front of the bastion) its
        known_hosts beside it (`<stem>.known_hosts`) lists the bastion at that port too."""
        known_hosts = None
        if bastion_port is not None:
            known_hosts = self.known_hosts_via(
                bastion_port, path.with_name(f"{path.stem}.known_hosts")
            )
        path.write_text(
            self.config_text(
                user, bastion_port=bastion_port, known_hosts=known_hosts, persist=persist
            )
        )
        return path

    # --- paramiko client logins ------------------------------------------------------------

    def login_bastion(
        self, user: str = "bulk", *, port: int | None = None, code: str | None = None
    ) -> paramiko.Transport:
        """A transport to the bastion (or `port`, e.g. a proxy), logged in with key + code."""
        transport = client_transport(tcp(port or self.bastion.port), self.bastion.host_key)
        try:
            allowed = transport.auth_publickey(user, self.client_keys[BASTION])
            if allowed:
                transport.auth_interactive(user, answers(code or self.totp_code(user)))
        except BaseException:
            transport.close()
            raise
        return transport

    def login_target(
        self, bastion: paramiko.Transport, alias: str, user: str = "bulk"
    ) -> paramiko.Transport:
        """A transport to a target over a direct-tcpip channel of `bastion`, key login."""
        target = self.targets[alias]
        channel = bastion.open_channel(
            "direct-tcpip",
            ("127.0.0.1", target.port),
            ("127.0.0.1", 0),
            window_size=WINDOW_SIZE,
            max_packet_size=MAX_PACKET_SIZE,
            timeout=TIMEOUT,
        )
        transport = client_transport(channel, target.host_key)
        try:
            transport.auth_publickey(user, self.client_keys[alias])
        except BaseException:
            transport.close()
            raise
        return transport

    def open_service(self, target: paramiko.Transport, name: str) -> paramiko.Channel:
        """A direct-tcpip channel from a logged-in target to localhost:<service port>."""
        return target.open_channel(
            "direct-tcpip",
            ("localhost", self.service_port(name)),
            ("127.0.0.1", 0),
            window_size=WINDOW_SIZE,
            max_packet_size=MAX_PACKET_SIZE,
            timeout=TIMEOUT,
        )


def _to_targets(targets: dict[str, SshServer]) -> Forward:
    """The bastion's forward: the targets' aliases and 127.0.0.1:<their port>, nothing else."""

    def forward(host: str, port: int) -> tuple[str, int] | None:
        for alias, target in targets.items():
            by_alias = host == alias and port in (22, target.port)
            by_address = host in ("127.0.0.1", "localhost") and port == target.port
            if by_alias or by_address:
                return ("127.0.0.1", target.port)
        return None

    return forward


def _toml(path: Path) -> str:
    text = str(path.resolve())
    if '"' in text or "\\" in text:
        raise ValueError(f"path {text!r} cannot be written as a basic TOML string")
    return f'"{text}"'


@dataclass
class FaultBastion:
    """A FaultProxy in front of the bastion and a config (bulk user) that goes through it."""

    proxy: FaultProxy
    config: Path

    @property
    def port(self) -> int:
        return self.proxy.port
