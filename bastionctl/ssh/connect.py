"""Opening authenticated SSH transports: to a bastion over TCP, to a target through it."""

from __future__ import annotations

import logging
import socket
import threading
import weakref
from dataclasses import dataclass, field

import paramiko

from bastionctl import sanitise
from bastionctl.config import Settings
from bastionctl.errors import AuthError, ConnectError, SecretStoreError
from bastionctl.model import Bastion, Endpoint, Host, hostport
from bastionctl.otp import Notify, SecretStore, TotpSource, UsedSteps
from bastionctl.ssh import datapath, first_contact, seam
from bastionctl.ssh.auth import Asker, PromptAnswerer, authenticate, load_identity
from bastionctl.ssh.datapath import MAX_PACKET_SIZE, WINDOW_SIZE
from bastionctl.ssh.forward import ChannelRefused, ChannelTimeout, open_direct
from bastionctl.ssh.hostkeys import KnownHosts, host_key_names
from bastionctl.ssh.wire import JumpSocket, ReadAhead

log = logging.getLogger(__name__)
# What each logged-in transport reads through, for `responsive()`.
_wires: weakref.WeakKeyDictionary[paramiko.Transport, ReadAhead] = weakref.WeakKeyDictionary()

# Faster than paramiko's default order (aes-ctr first) on the same hardware.
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
    "aes192-ctr",
)
# A person may need a while to type a code; the server's LoginGraceTime is the real bound.
AUTH_TIMEOUT = 120.0


@dataclass(frozen=True)
class Session:
    """What a login needs besides the endpoint: settings, known hosts, secrets, the person.

    One per front end (a terminal, the TUI, a request to the agent): `ask` and `notify` reach
    that front end and no other. Secrets and used TOTP steps are the process's, shared.
    """

    settings: Settings
    ask: Asker
    notify: Notify
    secrets: SecretStore | None = field(default_factory=SecretStore)
    used_steps: UsedSteps = field(default_factory=UsedSteps)
    known_hosts: KnownHosts = None  # type: ignore[assignment]  # default: settings.known_hosts

    def __post_init__(self) -> None:
        if self.known_hosts is None:
            object.__setattr__(self, "known_hosts", KnownHosts(self.settings.known_hosts))

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
    timeout = session.settings.connect_timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise _tcp_failure(f"bastion {bastion.alias}", host, port, timeout, exc) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    path = datapath.active()
    return _login(path.transport_socket(sock), bastion, session, f"bastion {bastion.alias}")


def _tcp_failure(what: str, host: str, port: int, timeout: float, exc: OSError) -> ConnectError:
    """One line for a TCP connection that could not be made, with what to check."""
    where = hostport(host, port)
    if isinstance(exc, socket.gaierror):
        return ConnectError(
            f"cannot resolve {host}, the address of {what}: {exc.strerror or exc}",
            "check the name in the config and this machine's DNS (`bastionctl doctor`)",
        )
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError(
            f"{what} at {where} refused the connection",
            "check the port in the config and that sshd runs there",
        )
    if isinstance(exc, TimeoutError | socket.timeout):
        return ConnectError(
            f"no answer from {what} at {where} within {timeout:g} s",
            "check the address, this machine's route to it and the firewalls on the way",
        )
    return ConnectError(
        f"cannot reach {what} at {where}: {exc.strerror or type(exc).__name__}",
        "check the address and that its SSH port is open to you",
    )


def connect_through(
    bastion_transport: paramiko.Transport, bastion: Bastion, host: Host, session: Session
) -> paramiko.Transport:
    """A transport to `host` whose socket is a direct-tcpip channel through the bastion."""
    target = (host.connect_host, host.port)
    path = datapath.active()
    timeout = session.settings.connect_timeout
    try:
        channel = open_direct(
            bastion_transport, path, f"bastion {bastion.alias}", target, ("127.0.0.1", 0), timeout
        )
    except (ChannelRefused, ChannelTimeout) as exc:
        raise ConnectError(
            f"{exc.message}, on the way to {host.alias}",
            "check the host's address and that the bastion may forward to its SSH port",
        ) from None
    return _login(path.jump_socket(channel), host, session, host.alias, via=bastion)


def responsive(transport: paramiko.Transport, timeout: float) -> bool:
    """Whether the server is still there: a keepalive answered within `timeout`, or data
    arriving meanwhile (on a busy link the answer waits behind up to a window of data)."""
    wire = _wires.get(transport)
    before = wire.received if wire is not None else None
    if probe(transport, timeout):
        return True
    return wire is not None and wire.received != before


def probe(transport: paramiko.Transport, timeout: float) -> bool:
    """A keepalive that expects an answer; paramiko's own keepalive never notices silence."""
    answered = threading.Event()

    def ask() -> None:
        try:
            transport.global_request("keepalive@openssh.com", wait=True)
        except Exception:  # a failed request on a dying transport is just "no answer"
            return
        answered.set()

    threading.Thread(target=ask, name="keepalive-probe", daemon=True).start()
    return answered.wait(timeout)


def _login(
    sock: ReadAhead, endpoint: Endpoint, session: Session, what: str, via: Bastion | None = None
) -> paramiko.Transport:
    transport = paramiko.Transport(
        sock,  # type: ignore[arg-type]  # socket-like, as paramiko allows
        default_window_size=WINDOW_SIZE,
        default_max_packet_size=MAX_PACKET_SIZE,
    )
    try:
        _tune(transport, endpoint, session)
        seam.set_auth_timeout(transport, AUTH_TIMEOUT)
        if isinstance(sock, JumpSocket):
            sock.watch(seam.watch_senders(transport))
        where = hostport(endpoint.connect_host, endpoint.port)
        timeout = session.settings.connect_timeout
        transport.banner_timeout = timeout  # paramiko's default waits 15 s for a banner
        try:
            transport.start_client(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise _handshake_failure(sock, what, where, timeout, exc) from None
        try:
            # start_client() returns quietly when the timeout passes mid-handshake; the
            # server's key is there only once the key exchange is done.
            server_key = transport.get_remote_server_key()
        except paramiko.SSHException:
            raise _handshake_failure(sock, what, where, timeout, None) from None
        first_contact.check(
            session.known_hosts, endpoint, server_key, via, session.ask, session.notify
        )
        keys = load_identity(endpoint, session.ask)
        answerer = PromptAnswerer(
            endpoint,
            lambda: session.totp_for(endpoint),
            session.ask,
            session.settings.totp_prompt,
        )
        authenticate(transport, endpoint, keys, answerer)
        if not transport.is_authenticated():
            raise AuthError(f"{what} did not accept the login")
        transport.set_keepalive(session.settings.keepalive_interval)
        _wires[transport] = sock
        log.info("logged in to %s as %s", what, endpoint.user)
        return transport
    except BaseException:
        transport.close()
        raise


def _handshake_failure(
    sock: ReadAhead, what: str, where: str, timeout: float, exc: BaseException | None
) -> ConnectError:
    """Why no SSH session came up (`exc` None: the timeout passed), told apart by what the
    server sent: nothing, something that is not SSH, or an SSH version paramiko refused."""
    if exc is not None and isinstance(exc.__context__, TimeoutError | socket.timeout):
        exc = None  # paramiko's banner_timeout: the same timeout as ours
    head = sock.head
    lines = head.splitlines()
    # paramiko names a version line it saw beyond the first bytes kept in `head`.
    saw_version = exc is not None and ("version" in str(exc).lower())
    if head and not saw_version and not any(line.startswith(b"SSH-") for line in lines):
        first = sanitise.line(lines[0].decode("utf-8", "replace"), 60) if lines else ""
        return ConnectError(
            f"{what} at {where} is not an SSH server (it answered {first!r})",
            "check the address and port in the config",
        )
    if exc is None:
        if not sock.received:
            return ConnectError(
                f"{what} at {where} accepted the connection but sent no SSH banner "
                f"within {timeout:g} s",
                "check the port in the config: something that is not sshd may listen there",
            )
        return ConnectError(
            f"no SSH handshake with {what} at {where} within {timeout:g} s",
            "the server or the path is slow: try again, or raise [settings] connect_timeout",
        )
    if not sock.received:
        return ConnectError(
            f"{what} at {where} closed the connection before its SSH banner",
            "sshd may refuse this address (a firewall, MaxStartups, fail2ban): ask its "
            "administrator",
        )
    # paramiko's text may quote what the server sent (its version line).
    reason = sanitise.line(str(exc)) or type(exc).__name__
    return ConnectError(f"SSH handshake with {what} at {where} failed: {reason}")


def _tune(transport: paramiko.Transport, endpoint: Endpoint, session: Session) -> None:
    options = transport.get_security_options()
    ciphers = list(options.ciphers)
    options.ciphers = [c for c in PREFERRED_CIPHERS if c in ciphers] + [
        c for c in ciphers if c not in PREFERRED_CIPHERS
    ]
    known = session.known_hosts.known_types(_known_names(endpoint))
    if known:
        # Like OpenSSH: ask for a host key type we can check before one we cannot.
        keys = list(options.key_types)
        options.key_types = [k for k in keys if k in known] + [k for k in keys if k not in known]


def _known_names(endpoint: Endpoint) -> list[str]:
    """Names known_hosts may list this endpoint under: its host_key_alias from the config, else
    the address connected to; never a name from EC2 tags (see hostkeys.host_key_names)."""
    return host_key_names(endpoint)
