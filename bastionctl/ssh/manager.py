"""Many tunnels over few logins: one authenticated transport per bastion, one per target.

Every tunnel through a bastion shares its transport, so the second tunnel of the day costs
no TOTP code. A dead transport is noticed by keepalive probes and rebuilt with capped,
jittered backoff while the local listeners stay bound; a login the server rejects is not
retried, and the tunnels that need it end `failed` with the reason.
"""

from __future__ import annotations

import enum
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paramiko

from bastionctl.errors import (
    AuthError,
    BastionctlError,
    HostKeyError,
    LoginCancelled,
    PortInUseError,
)
from bastionctl.model import Bastion, Host, TunnelSpec
from bastionctl.ssh.connect import (
    MAX_PACKET_SIZE,
    WINDOW_SIZE,
    Session,
    channel_failure_reasons,
    connect_bastion,
    connect_through,
)
from bastionctl.ssh.forward import LocalForwarder

log = logging.getLogger(__name__)

BACKOFF_START = 0.5
BACKOFF_CAP = 8.0
# How many ports after the remembered/default one to try when it is taken.
PORT_TRIES = 20


class TunnelState(enum.StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True)
class TunnelEvent:
    tunnel_id: int
    state: TunnelState
    message: str
    at: float = field(default_factory=time.time)


EventCallback = Callable[[TunnelEvent], None]


class _Link:
    """One transport that is rebuilt on demand; a rejected login is remembered, not retried."""

    def __init__(self, name: str, connect: Callable[[], paramiko.Transport]) -> None:
        self.name = name
        self._connect = connect
        self._lock = threading.Lock()
        self.transport: paramiko.Transport | None = None
        self.fatal: BastionctlError | None = None
        self.logins = 0

    def get(self) -> paramiko.Transport:
        with self._lock:
            if self.transport is not None and self.transport.is_active():
                return self.transport
            if self.fatal is not None:
                raise self.fatal
            try:
                self.transport = self._connect()
            except (AuthError, HostKeyError) as exc:
                # Retrying would burn codes and feed fail2ban; a person has to look.
                self.fatal = exc
                raise
            self.logins += 1
            return self.transport

    def allow_retry(self) -> None:
        """A person asked again: the remembered rejection no longer blocks a login."""
        self.fatal = None

    def alive(self) -> bool:
        transport = self.transport
        return transport is not None and transport.is_active()

    def drop(self) -> None:
        with self._lock:
            transport, self.transport = self.transport, None
        if transport is not None:
            transport.close()


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


class ManagedTunnel:
    def __init__(self, manager: TunnelManager, tunnel_id: int, spec: TunnelSpec) -> None:
        self.manager = manager
        self.id = tunnel_id
        self.spec = spec
        self.state = TunnelState.CONNECTING
        self.started = time.time()
        self.last_error: str | None = None
        self.forwarder = LocalForwarder(spec.bind, spec.local_port, self._open_channel)
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None

    @property
    def local_port(self) -> int:
        return self.forwarder.port

    def _set(self, state: TunnelState, message: str) -> None:
        self.state = state
        if state is TunnelState.FAILED:
            self.last_error = message
        self.manager._emit(TunnelEvent(self.id, state, message))

    def _links(self) -> tuple[_Link, _Link]:
        return self.manager._bastion_link(self.spec.bastion), self.manager._host_link(
            self.spec.bastion, self.spec.host
        )

    def _connect(self) -> None:
        bastion, host = self._links()
        bastion.get()
        host.get()

    def _open_channel(self, origin: tuple[str, int]) -> paramiko.Channel:
        if self.state is not TunnelState.UP:
            raise ConnectionError(f"{self.spec.label} is {self.state.value}")
        _bastion, host = self._links()
        try:
            with channel_failure_reasons() as reasons:
                return host.get().open_channel(
                    "direct-tcpip",
                    (self.spec.remote_host, self.spec.remote_port),
                    origin,
                    window_size=WINDOW_SIZE,
                    max_packet_size=MAX_PACKET_SIZE,
                    timeout=self.manager.session.settings.connect_timeout,
                )
        except paramiko.ChannelException as exc:
            raise ConnectionError(
                f"{self.spec.host.alias} could not connect to "
                f"{self.spec.remote_host}:{self.spec.remote_port} "
                f"({reasons[-1] if reasons else exc.text}); is the service running there?"
            ) from None

    def _listen(self) -> None:
        first = self.spec.local_port
        tries = 1 if self.spec.local_port_fixed or first == 0 else PORT_TRIES
        for offset in range(tries):
            if first + offset > 65535:
                break
            self.forwarder.requested_port = first + offset
            try:
                self.forwarder.listen()
            except PortInUseError:
                if tries == 1:
                    raise
                continue
            if offset:
                self.manager._emit(
                    TunnelEvent(
                        self.id,
                        TunnelState.CONNECTING,
                        f"local port {first} is in use; using {self.local_port} instead",
                    )
                )
            return
        raise PortInUseError(
            f"local ports {first}-{first + tries - 1} are all in use on {self.spec.bind}",
            "choose one with --local-port",
        )

    def start(self) -> None:
        self._listen()
        for link in self._links():
            link.allow_retry()
        try:
            self._connect()
        except BaseException as exc:
            self.forwarder.close()
            reason = exc.message if isinstance(exc, BastionctlError) else str(exc)
            # A login the person cancelled is a decision, not a failure.
            cancelled = isinstance(exc, LoginCancelled)
            self._set(TunnelState.CLOSED if cancelled else TunnelState.FAILED, reason)
            raise
        self.forwarder.start()
        self._set(TunnelState.UP, f"{self.spec.label} on {self.spec.bind}:{self.local_port}")
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"tunnel-{self.id}", daemon=True
        )
        self._supervisor.start()

    def _supervise(self) -> None:
        settings = self.manager.session.settings
        interval = float(settings.keepalive_interval)
        while not self._stop.wait(interval):
            bastion, host = self._links()
            healthy = bastion.alive() and host.alive()
            if healthy and host.transport is not None:
                healthy = probe(host.transport, timeout=interval)
            if healthy:
                continue
            bastion_dead = not bastion.alive() or (
                bastion.transport is not None and not probe(bastion.transport, interval)
            )
            if bastion_dead:
                bastion.drop()
            host.drop()
            self._reconnect()
            if self.state is not TunnelState.UP:
                return

    def _reconnect(self) -> None:
        self._set(TunnelState.RECONNECTING, f"the path to {self.spec.host.alias} was lost")
        delay = BACKOFF_START
        while not self._stop.is_set():
            try:
                self._connect()
            except (AuthError, HostKeyError) as exc:
                cancelled = isinstance(exc, LoginCancelled)
                self._set(TunnelState.CLOSED if cancelled else TunnelState.FAILED, exc.message)
                self.forwarder.close()
                return
            except BastionctlError as exc:
                self.last_error = exc.message
                wait = min(BACKOFF_CAP, delay) * random.uniform(0.8, 1.2)
                log.info("%s: %s; retrying in %.1f s", self.spec.label, exc.message, wait)
                if self._stop.wait(wait):
                    return
                delay *= 2
                continue
            self._set(TunnelState.UP, f"{self.spec.label} is back on port {self.local_port}")
            return

    def close(self) -> None:
        self._stop.set()
        self.forwarder.close()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=5)
        self._set(TunnelState.CLOSED, self.spec.label)


class TunnelManager:
    """Opens and tracks tunnels for one process; the CLI and the TUI share this API."""

    def __init__(self, session: Session, on_event: EventCallback | None = None) -> None:
        self.session = session
        self.on_event = on_event or (lambda _event: None)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._tunnels: dict[int, ManagedTunnel] = {}
        self._bastions: dict[str, _Link] = {}
        self._hosts: dict[tuple[str, str], _Link] = {}

    def _emit(self, event: TunnelEvent) -> None:
        log.info("tunnel %s %s: %s", event.tunnel_id, event.state.value, event.message)
        self.on_event(event)

    def _bastion_link(self, bastion: Bastion) -> _Link:
        with self._lock:
            link = self._bastions.get(bastion.alias)
            if link is None:
                link = _Link(bastion.alias, lambda: connect_bastion(bastion, self.session))
                self._bastions[bastion.alias] = link
            return link

    def _host_link(self, bastion: Bastion, host: Host) -> _Link:
        key = (bastion.alias, host.alias)
        with self._lock:
            link = self._hosts.get(key)
            if link is None:
                link = _Link(
                    host.alias,
                    lambda: connect_through(
                        self._bastion_link(bastion).get(), bastion, host, self.session
                    ),
                )
                self._hosts[key] = link
            return link

    def bastion_logins(self, alias: str) -> int:
        link = self._bastions.get(alias)
        return link.logins if link else 0

    def open(self, spec: TunnelSpec) -> ManagedTunnel:
        tunnel = ManagedTunnel(self, next(self._ids), spec)
        with self._lock:
            self._tunnels[tunnel.id] = tunnel
        try:
            tunnel.start()
        except BaseException:
            with self._lock:
                self._tunnels.pop(tunnel.id, None)
            raise
        return tunnel

    def list(self) -> list[ManagedTunnel]:
        with self._lock:
            return sorted(self._tunnels.values(), key=lambda t: t.id)

    def close(self, tunnel_id: int) -> None:
        with self._lock:
            tunnel = self._tunnels.pop(tunnel_id)
        tunnel.close()
        self._drop_unused()

    def close_all(self) -> None:
        for tunnel in self.list():
            self.close(tunnel.id)
        for link in [*self._hosts.values(), *self._bastions.values()]:
            link.drop()

    def _drop_unused(self) -> None:
        with self._lock:
            used_hosts = {(t.spec.bastion.alias, t.spec.host.alias) for t in self._tunnels.values()}
            used_bastions = {b for b, _ in used_hosts}
            idle = [link for key, link in self._hosts.items() if key not in used_hosts]
            idle += [link for key, link in self._bastions.items() if key not in used_bastions]
        for link in idle:
            link.drop()

    def __enter__(self) -> TunnelManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_all()
