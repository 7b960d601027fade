"""A real SSH server for tests: paramiko's server mode on 127.0.0.1, in threads.

It plays a 2FA bastion (publickey then a TOTP keyboard-interactive prompt, with the
google-authenticator rules for reuse, rate limit and window) or a private target
(publickey only), and opens `direct-tcpip` channels to real TCP sockets. Nothing is
mocked: clients talk to it over real loopback sockets with real SSH transports.

    with SshServer("server-01", {"op": UserRule([key], totp_secret=secret)}) as bastion:
        port = bastion.port
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import paramiko
import pyotp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paramiko.common import (
    AUTH_FAILED,
    AUTH_PARTIALLY_SUCCESSFUL,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_FAILED_CONNECT_FAILED,
    OPEN_SUCCEEDED,
)
from paramiko.server import InteractiveQuery

from tests.ssh.loopback import Loopback, abort, close_quietly

WINDOW_SIZE = 2 * 1024 * 1024
MAX_PACKET_SIZE = 32768
CONNECT_TIMEOUT = 3.0
BUFFER = 1 << 20
PUBLICKEY = "publickey"
KBD = "keyboard-interactive"
OUTCOMES = ("accepted", "partial", "failed", "rate-limited", "reused")
LOG_CHANNEL = "tests.ssh.server"

# The server's transports log here, not to paramiko's loggers: pytest still captures the
# records, and the NullHandler keeps logging's last-resort handler off stderr.
logging.getLogger(LOG_CHANNEL).addHandler(logging.NullHandler())

Forward = Callable[[str, int], tuple[str, int] | None]


def new_ed25519() -> tuple[paramiko.PKey, str]:
    """A fresh Ed25519 key and its OpenSSH private-key text (for identity files)."""
    private = Ed25519PrivateKey.generate()
    text = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    return paramiko.Ed25519Key(file_obj=io.StringIO(text)), text


def public_line(key: paramiko.PKey) -> str:
    """`ssh-ed25519 AAAA...`: the key as in authorized_keys or known_hosts."""
    return f"{key.get_name()} {key.get_base64()}"


def loopback_forward(host: str, port: int) -> tuple[str, int] | None:
    """The default `forward`: localhost and 127.0.0.1 only, on any port."""
    if host in ("localhost", "127.0.0.1"):
        return ("127.0.0.1", port)
    return None


def _close_channel(channel: paramiko.Channel) -> None:
    """Channel.close() sends CHANNEL_CLOSE, which fails on a transport that is going away."""
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        channel.close()


@dataclass
class UserRule:
    """One account: its keys and, for a 2FA login, google-authenticator's settings."""

    authorized_keys: list[paramiko.PKey]
    totp_secret: str | None = None  # base32; None = publickey only
    disallow_reuse: bool = True  # DISALLOW_REUSE: an accepted step is rejected after
    rate_limit: tuple[int, float] | None = (3, 30.0)  # RATE_LIMIT 3 30
    window: int = 1  # WINDOW_SIZE 3: steps now-1..now+1
    kbd_first: bool = False  # AuthenticationMethods keyboard-interactive,publickey

    def methods(self) -> list[str]:
        if self.totp_secret is None:
            return [PUBLICKEY]
        return [KBD, PUBLICKEY] if self.kbd_first else [PUBLICKEY, KBD]

    def authorizes(self, key: paramiko.PKey) -> bool:
        blob = key.asbytes()
        return any(k.asbytes() == blob for k in self.authorized_keys)


@dataclass(frozen=True)
class AuthEvent:
    user: str
    method: str
    outcome: str  # one of OUTCOMES
    at: float = field(default_factory=time.monotonic, compare=False)


class _TotpState:
    """google-authenticator's per-user state file: used steps and recent attempts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.used_steps: set[int] = set()
        self.attempts: deque[float] = deque()

    def admit(self, limit: tuple[int, float] | None) -> bool:
        """Record an attempt; False when it exceeds RATE_LIMIT (it still counts, as in PAM)."""
        if limit is None:
            return True
        count, period = limit
        now = time.monotonic()
        with self.lock:
            while self.attempts and self.attempts[0] <= now - period:
                self.attempts.popleft()
            self.attempts.append(now)
            if len(self.attempts) > count:
                while len(self.attempts) > count:
                    self.attempts.popleft()
                return False
            return True

    def verify(self, rule: UserRule, code: str) -> str:
        """The verdict on `code` now: "ok", "failed" or "reused"."""
        assert rule.totp_secret is not None
        totp = pyotp.TOTP(rule.totp_secret)
        step = int(time.time() // totp.interval)
        matched = None
        for offset in sorted(range(-rule.window, rule.window + 1), key=abs):
            if totp.verify(code.strip(), for_time=(step + offset) * totp.interval):
                matched = step + offset
                break
        if matched is None:
            return "failed"
        with self.lock:
            if rule.disallow_reuse:
                if matched in self.used_steps:
                    return "reused"
                self.used_steps.add(matched)
        return "ok"


class _Connection(paramiko.ServerInterface):
    """The server side of one SSH connection: its login progress and its channels."""

    def __init__(self, server: SshServer, transport: paramiko.Transport) -> None:
        self.server = server
        self.transport = transport
        self.done: set[str] = set()
        self.kbd_user: str | None = None
        self.lock = threading.Lock()
        self.pending: dict[int, socket.socket] = {}  # chanid -> connected socket

    # --- authentication -------------------------------------------------------------

    def _next(self, username: str) -> str | None:
        rule = self.server.users.get(username)
        if rule is None:
            return PUBLICKEY
        missing = [m for m in rule.methods() if m not in self.done]
        return missing[0] if missing else None

    def _complete(self, username: str, method: str) -> int:
        self.done.add(method)
        if self._next(username) is None:
            self.server._record(username, method, "accepted")
            return AUTH_SUCCESSFUL
        self.server._record(username, method, "partial")
        return AUTH_PARTIALLY_SUCCESSFUL

    def get_allowed_auths(self, username: str) -> str:
        # Like OpenSSH with AuthenticationMethods: only the next method of the chain.
        return self._next(username) or ""

    def check_auth_none(self, username: str) -> int:
        return AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        self.server._record(username, "password", "failed")
        return AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        rule = self.server.users.get(username)
        if rule is None or not rule.authorizes(key) or self._next(username) != PUBLICKEY:
            self.server._record(username, PUBLICKEY, "failed")
            return AUTH_FAILED
        # paramiko asks this both for a query without signature (OpenSSH sends one first)
        # and before it checks the signature; the login step only counts once the
        # signature is good, so watch this very key object's verification.
        verify = key.verify_ssh_sig

        def verified(data: bytes, msg: paramiko.Message) -> bool:
            good = bool(verify(data, msg))
            if good:
                self._complete(username, PUBLICKEY)
            else:
                self.server._record(username, PUBLICKEY, "failed")
            return good

        key.verify_ssh_sig = verified  # type: ignore[method-assign]
        missing = [m for m in rule.methods() if m not in self.done and m != PUBLICKEY]
        return AUTH_PARTIALLY_SUCCESSFUL if missing else AUTH_SUCCESSFUL

    def check_auth_interactive(self, username: str, submethods: str) -> int | InteractiveQuery:
        rule = self.server.users.get(username)
        if rule is None or rule.totp_secret is None or self._next(username) != KBD:
            self.server._record(username, KBD, "failed")
            return AUTH_FAILED
        if not self.server._totp_state(username).admit(rule.rate_limit):
            # pam_google_authenticator refuses before it prompts: no question, a failure.
            self.server._record(username, KBD, "rate-limited")
            return AUTH_FAILED
        self.kbd_user = username
        return InteractiveQuery("", "", (self.server.prompt, False))

    def check_auth_interactive_response(self, responses: list[str]) -> int | InteractiveQuery:
        username, self.kbd_user = self.kbd_user, None
        rule = self.server.users.get(username) if username is not None else None
        if username is None or rule is None:
            return AUTH_FAILED
        code = responses[0] if len(responses) == 1 else ""
        verdict = self.server._totp_state(username).verify(rule, code)
        if verdict != "ok":
            self.server._record(username, KBD, verdict)
            return AUTH_FAILED
        return self._complete(username, KBD)

    def get_banner(self) -> tuple[str | None, str | None]:
        if self.server.banner is None:
            return (None, None)
        return (self.server.banner, "en-US")

    # --- requests and channels ------------------------------------------------------

    def check_global_request(self, kind: str, msg: paramiko.Message) -> bool:
        # keepalive@openssh.com and the rest: REQUEST_FAILURE, which is still an answer.
        return False

    def check_port_forward_request(self, address: str, port: int) -> bool:
        return False

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(
        self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]
    ) -> int:
        if not self.transport.is_authenticated():
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        mapped = self.server.forward(str(destination[0]), int(destination[1]))
        if mapped is None:
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        try:
            sock = socket.create_connection(mapped, timeout=CONNECT_TIMEOUT)
        except OSError:
            return OPEN_FAILED_CONNECT_FAILED
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # paramiko creates the Channel after this returns; transport.accept() hands it over.
        with self.lock:
            self.pending[chanid] = sock
        return OPEN_SUCCEEDED

    def take_socket(self, chanid: int) -> socket.socket | None:
        with self.lock:
            return self.pending.pop(chanid, None)

    def close_pending(self) -> None:
        with self.lock:
            pending, self.pending = list(self.pending.values()), {}
        for sock in pending:
            close_quietly(sock)


class _Pipe:
    """One direct-tcpip channel and its TCP socket, pumped both ways by two threads."""

    def __init__(self, server: SshServer, channel: paramiko.Channel, sock: socket.socket) -> None:
        self.server = server
        self.channel = channel
        self.sock = sock
        self.lock = threading.Lock()
        self.running = 2

    def start(self, prefix: str) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._channel_to_socket, name=f"{prefix}-c2s", daemon=True),
            threading.Thread(target=self._socket_to_channel, name=f"{prefix}-s2c", daemon=True),
        ]
        for thread in threads:
            thread.start()
        return threads

    def _channel_to_socket(self) -> None:
        try:
            while True:
                data = self.channel.recv(BUFFER)
                if not data:
                    break
                self.sock.sendall(data)
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            if self.channel.closed:
                # Closed, not only EOF: nobody reads the other way any more.
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)
            self._done()

    def _socket_to_channel(self) -> None:
        buffer = bytearray(BUFFER)
        view = memoryview(buffer)
        try:
            while True:
                count = self.sock.recv_into(buffer)
                if not count:
                    break
                # A memoryview slice: no copy per packet (the stub says bytes only).
                self.channel.sendall(view[:count])  # type: ignore[arg-type]
            with contextlib.suppress(OSError, EOFError):
                self.channel.shutdown_write()
        except (OSError, EOFError):
            # The socket died (reset): the channel goes too.
            _close_channel(self.channel)
        finally:
            self._done()

    def _done(self) -> None:
        with self.lock:
            self.running -= 1
            last = self.running == 0
        if last:
            if self.server.close_after_eofs or self.channel.closed:
                _close_channel(self.channel)
            else:
                self.server.kept.append(self.channel)
            with contextlib.suppress(OSError):
                self.sock.close()
            self.server._pipe_finished(self)

    def kill(self) -> None:
        _close_channel(self.channel)
        close_quietly(self.sock)


class SshServer(Loopback):
    """An SSH server on 127.0.0.1 in this process, as a bastion or as a private target."""

    def __init__(
        self,
        name: str,
        users: dict[str, UserRule],
        *,
        host_key: paramiko.PKey | None = None,
        prompt: str = "Verification code: ",
        banner: str | None = None,
        forward: Forward | None = None,
    ) -> None:
        super().__init__(f"sshd-{name}")
        self.name = name
        self.users = users
        self.host_key = host_key if host_key is not None else new_ed25519()[0]
        self.prompt = prompt
        self.banner = banner
        self.forward: Forward = forward if forward is not None else loopback_forward
        # False: a direct-tcpip channel past both EOFs stays open (kept), as OpenSSH's never does.
        self.close_after_eofs = True
        self.kept: list[paramiko.Channel] = []
        self.events: list[AuthEvent] = []
        self._states: dict[str, _TotpState] = {}
        self._transports: list[paramiko.Transport] = []
        self._pipes: set[_Pipe] = set()
        self._serial = 0

    # --- life cycle (start, stop and the context manager: Loopback's) -------------------

    def stop(self) -> None:
        super().stop()
        with self._lock:
            self._transports.clear()

    def known_hosts_line(self, port: int | None = None) -> str:
        """Its host key in known_hosts, at its port or at `port` (e.g. a proxy in front of it)."""
        return f"[127.0.0.1]:{port or self.port} {public_line(self.host_key)}"

    # --- what happened -----------------------------------------------------------------

    def _record(self, user: str, method: str, outcome: str) -> None:
        with self._lock:
            self.events.append(AuthEvent(user, method, outcome))

    def attempts(self, method: str = KBD, user: str | None = None) -> int:
        """Auth events of `method` (every outcome), optionally of one user."""
        with self._lock:
            return sum(
                1 for e in self.events if e.method == method and (user is None or e.user == user)
            )

    def logins(self, method: str = KBD, user: str | None = None) -> int:
        """Times `method` was accepted (a completed login or a partial success)."""
        with self._lock:
            return sum(
                1
                for e in self.events
                if e.method == method
                and e.outcome in ("accepted", "partial")
                and (user is None or e.user == user)
            )

    def outcomes(self, user: str | None = None) -> list[str]:
        with self._lock:
            return [e.outcome for e in self.events if user is None or e.user == user]

    def _totp_state(self, user: str) -> _TotpState:
        with self._lock:
            return self._states.setdefault(user, _TotpState())

    # --- faults --------------------------------------------------------------------------

    def active_transports(self, alive_only: bool = True) -> list[paramiko.Transport]:
        with self._lock:
            transports = list(self._transports)
        return [t for t in transports if t.is_active()] if alive_only else transports

    def open_channels(self) -> int:
        with self._lock:
            return len(self._pipes)

    def drop_connections(self) -> int:
        """Every live connection's socket closed with RST, no SSH goodbye; how many."""
        dropped = 0
        for transport in self.active_transports():
            sock = transport.sock
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.close()
            dropped += 1
        return dropped

    def rekey(self) -> int:
        """A key re-exchange started by the server on every live, logged-in transport."""
        count = 0
        for transport in self.active_transports():
            if transport.is_authenticated():
                transport.renegotiate_keys()
                count += 1
        return count

    # --- Loopback's hooks and the internals ----------------------------------------------

    def _thread_name(self, what: str) -> str:
        self._serial += 1
        return f"{self.thread_prefix}-{what}-{self._serial}"

    def _accepted(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(
            sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE
        )
        transport.set_log_channel(f"{LOG_CHANNEL}.{self.name}")
        with self._lock:
            if self._stopping:
                transport.close()
                abort(sock)
                return
            self._serial += 1
            transport.name = f"{self.thread_prefix}-transport-{self._serial}"
            self._transports = [t for t in self._transports if t.is_active()]
            self._transports.append(transport)
        self._spawn(self._serve, "conn", transport)

    def _close_open(self) -> None:
        for transport in self.active_transports(alive_only=False):
            transport.close()
        with self._lock:
            pipes = list(self._pipes)
        for pipe in pipes:
            pipe.kill()

    def _other_threads(self) -> list[threading.Thread]:
        return list(self.active_transports(alive_only=False))  # each Transport is a thread

    def _serve(self, transport: paramiko.Transport) -> None:
        connection = _Connection(self, transport)
        try:
            transport.add_server_key(self.host_key)
            transport.start_server(server=connection)
        except (paramiko.SSHException, EOFError, OSError):
            transport.close()
            return
        try:
            while transport.is_active() and not self._stopping:
                channel = transport.accept(0.2)
                if channel is None:
                    continue
                sock = connection.take_socket(channel.get_id())
                if sock is None:
                    _close_channel(channel)
                    continue
                pipe = _Pipe(self, channel, sock)
                with self._lock:
                    if self._stopping:
                        pipe.kill()
                        break
                    self._pipes.add(pipe)
                    self._serial += 1
                    prefix = f"{self.thread_prefix}-pipe-{self._serial}"
                    self._threads = [t for t in self._threads if t.is_alive()]
                    threads = pipe.start(prefix)
                    self._threads.extend(threads)
        finally:
            connection.close_pending()
            transport.close()

    def _pipe_finished(self, pipe: _Pipe) -> None:
        with self._lock:
            self._pipes.discard(pipe)
