"""Opening authenticated SSH transports: to a bastion over TCP, to a target through it."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import paramiko

from bastionctl.config import Settings
from bastionctl.errors import AuthError, ConnectError, SecretStoreError
from bastionctl.model import Bastion, Endpoint, Host, hostport
from bastionctl.otp import Notify, SecretStore, TotpSource, UsedSteps
from bastionctl.ssh import pipe
from bastionctl.ssh.auth import Asker, PromptAnswerer, authenticate, load_identity
from bastionctl.ssh.hostkeys import KnownHosts
from bastionctl.ssh.wire import JumpSocket, ReadAhead

log = logging.getLogger(__name__)
pipe.install()

# Faster than paramiko's default order (aes-ctr first) on the same hardware.
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
    "aes192-ctr",
)
WINDOW_SIZE = 2 * 1024 * 1024
MAX_PACKET_SIZE = 32768
# A person may need a while to type a code; the server's LoginGraceTime is the real bound.
AUTH_TIMEOUT = 120.0


@dataclass
class Session:
    """What a login needs besides the endpoint: settings, known hosts, secrets, the user."""

    settings: Settings
    ask: Asker
    notify: Notify
    secrets: SecretStore | None = field(default_factory=SecretStore)
    used_steps: UsedSteps = field(default_factory=UsedSteps)
    known_hosts: KnownHosts | None = None

    def __post_init__(self) -> None:
        if self.known_hosts is None:
            self.known_hosts = KnownHosts(self.settings.known_hosts)

    def totp_for(self, endpoint: Endpoint) -> TotpSource | None:
        if self.secrets is None:
            return None
        try:
            secret = self.secrets.get(endpoint.alias)
        except SecretStoreError as exc:
            self.notify(f"{exc.message}; asking for the code instead")
            return None
        if secret is None:
            return None
        single_use = endpoint.otp_single_use if isinstance(endpoint, Bastion) else True
        return TotpSource(endpoint.alias, secret, self.used_steps, single_use, self.notify)


def connect_bastion(bastion: Bastion, session: Session) -> paramiko.Transport:
    host, port = bastion.connect_host, bastion.port
    try:
        sock = socket.create_connection((host, port), timeout=session.settings.connect_timeout)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError | socket.timeout):
            reason = f"timed out after {session.settings.connect_timeout:g} s"
        raise ConnectError(
            f"cannot reach bastion {bastion.alias} at {hostport(host, port)}: {reason}",
            "check the address and that its SSH port is open to you",
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return _login(ReadAhead(sock), bastion, session, f"bastion {bastion.alias}")


def connect_through(
    bastion_transport: paramiko.Transport, bastion: Bastion, host: Host, session: Session
) -> paramiko.Transport:
    """A transport to `host` whose socket is a direct-tcpip channel through the bastion."""
    target = (host.connect_host, host.port)
    try:
        channel = bastion_transport.open_channel(
            "direct-tcpip",
            target,
            ("127.0.0.1", 0),
            window_size=WINDOW_SIZE,
            max_packet_size=MAX_PACKET_SIZE,
            timeout=session.settings.connect_timeout,
        )
    except paramiko.ChannelException as exc:
        raise ConnectError(
            f"bastion {bastion.alias} could not open a channel to {host.alias} at "
            f"{hostport(*target)}: {exc.text} (code {exc.code})",
            "check the host's address and that the bastion may forward to its SSH port",
        ) from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise ConnectError(
            f"bastion {bastion.alias} dropped the connection while opening a channel to "
            f"{host.alias}: {exc or type(exc).__name__}"
        ) from None
    return _login(JumpSocket(channel), host, session, host.alias)


def _login(sock: ReadAhead, endpoint: Endpoint, session: Session, what: str) -> paramiko.Transport:
    transport = paramiko.Transport(
        sock,  # type: ignore[arg-type]  # socket-like, as paramiko allows
        default_window_size=WINDOW_SIZE,
        default_max_packet_size=MAX_PACKET_SIZE,
    )
    try:
        _tune(transport, endpoint, session)
        transport.auth_timeout = AUTH_TIMEOUT
        try:
            transport.start_client(timeout=session.settings.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectError(
                f"SSH handshake with {what} at {hostport(endpoint.connect_host, endpoint.port)} "
                f"failed: {exc or type(exc).__name__}"
            ) from None
        assert session.known_hosts is not None
        session.known_hosts.verify(
            endpoint.alias, _known_names(endpoint), transport.get_remote_server_key()
        )
        keys = load_identity(endpoint, session.ask)
        answerer = PromptAnswerer(endpoint, lambda: session.totp_for(endpoint), session.ask)
        authenticate(transport, endpoint, keys, answerer)
        if not transport.is_authenticated():
            raise AuthError(f"{what} did not accept the login")
        transport.set_keepalive(session.settings.keepalive_interval)
        log.info("logged in to %s as %s", what, endpoint.user)
        return transport
    except BaseException:
        transport.close()
        raise


def _tune(transport: paramiko.Transport, endpoint: Endpoint, session: Session) -> None:
    options = transport.get_security_options()
    ciphers = list(options.ciphers)
    options.ciphers = [c for c in PREFERRED_CIPHERS if c in ciphers] + [
        c for c in ciphers if c not in PREFERRED_CIPHERS
    ]
    assert session.known_hosts is not None
    known = session.known_hosts.known_types(_known_names(endpoint))
    if known:
        # Like OpenSSH: ask for a host key type we can check before one we cannot.
        keys = list(options.key_types)
        options.key_types = [k for k in keys if k in known] + [k for k in keys if k not in known]


def _known_names(endpoint: Endpoint) -> list[str]:
    """Names known_hosts may list this endpoint under; the first is what we connect to."""
    names = [endpoint.known_hosts_name]
    for extra in (endpoint.alias, endpoint.fqdn):
        if extra:
            name = extra if endpoint.port == 22 else f"[{extra}]:{endpoint.port}"
            if name not in names:
                names.append(name)
    return names


class _OpenFailures(logging.Handler):
    """Collects the server's reason for a refused channel, which paramiko only logs."""

    pattern = re.compile(r"open FAILED: (.*): [^:]*$")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = self.pattern.search(record.getMessage())
        if match:
            self.reasons.append(match.group(1))


@contextlib.contextmanager
def channel_failure_reasons() -> Iterator[list[str]]:
    """`with channel_failure_reasons() as reasons:` around open_channel(); the server's texts."""
    handler = _OpenFailures()
    logger = logging.getLogger("paramiko.transport")
    logger.addHandler(handler)
    try:
        yield handler.reasons
    finally:
        logger.removeHandler(handler)
