"""Many tunnels over few logins: one authenticated transport per bastion, one per target.

Every tunnel through a bastion shares its transport, so the second tunnel of the day costs
no TOTP code. A dead transport is noticed by keepalive probes and rebuilt with capped,
jittered backoff while the local listeners stay bound; a login the server rejects is not
retried, and the tunnels that need it end `failed` with the reason.

Each tunnel belongs to the session of the front end that opened it: its prompts go there and
nowhere else. When a login asks something and that front end has gone (a `--detach` command
that has ended), the tunnel waits in `needs-input`, its port still bound, until a front end
answers (`answer()`) or another tunnel's login brings the transport it waits for back.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bastionctl.errors import (
    AuthError,
    BastionctlError,
    ConnectError,
    HostKeyError,
    LoginCancelled,
    NeedsInput,
    PortInUseError,
    UsageError,
)
from bastionctl.model import Bastion, Host, TunnelSpec
from bastionctl.ssh import datapath
from bastionctl.ssh.connect import Session, connect_bastion, connect_through, responsive
from bastionctl.ssh.forward import LocalForwarder, Route, open_direct
from bastionctl.tunnels.failures import FailureDigest
from bastionctl.tunnels.ports import PortBook
from bastionctl.tunnels.protocol import TunnelEvent, TunnelId, TunnelInfo, TunnelState
from bastionctl.tunnels.spec import spec_key

if TYPE_CHECKING:
    # Imported by bastionctl.ssh first, where paramiko is loaded without Invoke (ssh.seam).
    import paramiko

log = logging.getLogger(__name__)

BACKOFF_START = 0.5
BACKOFF_CAP = 8.0
# How many ports after the remembered/default one to try when it is taken.
PORT_TRIES = 20
# Clients that connect while the path is not up yet wait for it, this many at a time at most.
MAX_HELD = 16
# States whose clients are held (each for at most connect_timeout) rather than refused.
HOLDING = (TunnelState.CONNECTING, TunnelState.RECONNECTING)

EventCallback = Callable[[TunnelEvent], None]


class _Link:
    """One transport that is rebuilt on demand; a rejected login is remembered, not retried."""

    def __init__(
        self,
        name: str,
        connect: Callable[[Session], paramiko.Transport],
        on_login: Callable[[], None],
    ) -> None:
        self.name = name
        self._connect = connect
        self._on_login = on_login
        self._lock = threading.Lock()
        self.transport: paramiko.Transport | None = None
        self.fatal: BastionctlError | None = None
        self.logins = 0

    def get(self, session: Session) -> paramiko.Transport:
        """The live transport, logging in with `session` (its front end's prompts) if needed."""
        with self._lock:
            if self.transport is not None and self.transport.is_active():
                return self.transport
            if self.fatal is not None:
                raise self.fatal
            try:
                self.transport = self._connect(session)
            except LoginCancelled:
                raise  # a person's decision, or nobody there: not the server's verdict
            except (AuthError, HostKeyError) as exc:
                # Retrying would burn codes and feed fail2ban; a person has to look.
                self.fatal = exc
                raise
            self.logins += 1
            transport = self.transport
        self._on_login()
        return transport

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


class ManagedTunnel:
    def __init__(
        self, manager: TunnelManager, tunnel_id: TunnelId, spec: TunnelSpec, session: Session
    ) -> None:
        self.manager = manager
        self.id = tunnel_id
        self.spec = spec
        # The front end this tunnel's prompts go to; replaced when another one answers.
        self.session = session
        self.state = TunnelState.CONNECTING
        self.started = time.time()
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.errors = 0
        self.waiting_for: str | None = None
        self.forwarder = LocalForwarder(
            spec.bind,
            spec.local_port,
            self._open_channel,
            manager.data_path,
            self._failed_forward,
            self._route_now,
        )
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._changed = threading.Condition()
        self._attempts = 0
        self._waiting_on: _Link | None = None
        self._supervisor: threading.Thread | None = None
        self._held = 0
        self._digest = FailureDigest()
        self._digest_timer: threading.Timer | None = None

    @property
    def local_port(self) -> int:
        return self.forwarder.port

    def info(self) -> TunnelInfo:
        spec = self.spec
        return TunnelInfo(
            id=self.id,
            process=self.manager.process,
            service=spec.service.name if spec.service else None,
            host=spec.host.alias,
            bastion=spec.bastion.alias,
            remote_host=spec.remote_host,
            remote_port=spec.remote_port,
            bind=spec.bind,
            local_port=self.local_port,
            connection=spec.connection_string(self.local_port),
            state=self.state,
            started=self.started,
            bytes_in=self.forwarder.bytes_in,
            bytes_out=self.forwarder.bytes_out,
            connections=self.forwarder.active,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            errors=self.errors,
            waiting_for=self.waiting_for,
        )

    def _set(self, state: TunnelState, message: str, attempt: bool = False) -> None:
        """Change state (`attempt`: as the outcome of a login attempt) and tell the front end."""
        with self._changed:
            self.state = state
            if state is TunnelState.FAILED:
                self._record(message)
            if attempt:
                self._attempts += 1
            self._changed.notify_all()
        self.manager._emit(TunnelEvent(self.id, state, message))

    def _record(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = time.time()

    def _failed_forward(self, message: str) -> None:
        """A connection to the local port could not be carried: counted and kept as the error.

        Front ends hear of it as a failure event, rate-limited (tunnels.failures).
        """
        if self._stop.is_set():
            return  # the tunnel was stopped: its clients are cut on purpose
        with self._changed:
            self.errors += 1
            if self.state is TunnelState.FAILED:
                return  # the tunnel's own failure is the error, told once, and stays so
            self._record(message)
            line = self._digest.add(message)
            self._schedule_digest()
        if line is not None:
            self._tell_failure(line)

    def _tell_failure(self, line: str) -> None:
        self.manager._emit(
            TunnelEvent(self.id, self.state, f"client connection closed: {line}", failure=True)
        )

    def _schedule_digest(self) -> None:
        """(Holding `_changed`.) A timer for the repeats the digest counted and has not told."""
        if self._digest_timer is not None or self._stop.is_set():
            return
        wait = self._digest.next_due()
        if wait is None:
            return
        timer = threading.Timer(wait, self._flush_digest)
        timer.daemon = True
        timer.name = f"tunnel-{self.id}-failures"
        self._digest_timer = timer
        timer.start()

    def _flush_digest(self) -> None:
        with self._changed:
            self._digest_timer = None
            lines = [] if self._stop.is_set() else self._digest.due()
            self._schedule_digest()
        for line in lines:
            self._tell_failure(line)

    def _links(self) -> tuple[_Link, _Link]:
        return self.manager._bastion_link(self.spec.bastion), self.manager._host_link(
            self.spec.bastion, self.spec.host
        )

    def _connect(self) -> None:
        for link in self._links():
            try:
                link.get(self.session)
            except LoginCancelled as exc:
                self._waiting_on = link
                if isinstance(exc, NeedsInput):
                    self.waiting_for = f"the login to {link.name}: {exc.prompt}"
                else:
                    self.waiting_for = f"the login to {link.name} (its last prompt was declined)"
                raise

    def _until_up(self) -> None:
        """Hold a client that came while the path is not up (logging in, reconnecting).

        It waits at most connect_timeout, and at most MAX_HELD wait at once; raises
        ConnectError with why it is not served.
        """
        label = self.spec.label
        timeout = float(self.session.settings.connect_timeout)
        with self._changed:
            if self.state in HOLDING and not self._stop.is_set():
                if self._held >= MAX_HELD:
                    raise ConnectError(
                        f"{MAX_HELD} clients already wait for {label} to come up; connection closed"
                    )
                self._held += 1
                deadline = time.monotonic() + timeout
                try:
                    while self.state in HOLDING and not self._stop.is_set():
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise ConnectError(
                                f"{label} was not up within {timeout:g} s (connect_timeout) "
                                f"of a client connecting; connection closed"
                            )
                        self._changed.wait(left)
                finally:
                    self._held -= 1
            state = self.state
            if self._stop.is_set():
                raise ConnectError(f"{label} was stopped")
            if state is TunnelState.UP:
                return
            if state is TunnelState.FAILED:
                raise ConnectError(f"{label} failed; connection closed")
            raise ConnectError(f"{label} is {state.value}; connection refused")

    def _route_now(self) -> Route | None:
        """Where a new connection's channel opens without waiting: only while the tunnel is up
        and its host's login alive (otherwise the connection takes _open_channel())."""
        if self.state is not TunnelState.UP:
            return None
        _bastion, host = self._links()
        transport = host.transport
        if transport is None or not transport.is_active():
            return None
        spec = self.spec
        return Route(
            transport,
            spec.host.alias,
            (spec.remote_host, spec.remote_port),
            self.session.settings.connect_timeout,
        )

    def _open_channel(self, origin: tuple[str, int]) -> paramiko.Channel:
        spec = self.spec
        self._until_up()
        _bastion, host = self._links()
        return open_direct(
            host.get(self.session),
            self.manager.data_path,
            spec.host.alias,
            (spec.remote_host, spec.remote_port),
            origin,
            self.session.settings.connect_timeout,
        )

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
        # Accepting already: a client started early waits for the login (see _until_up).
        self.forwarder.start()
        for link in self._links():
            link.allow_retry()
        try:
            self._connect()
        except BaseException as exc:
            self.forwarder.close()
            reason = exc.message if isinstance(exc, BastionctlError) else str(exc)
            # A login the person cancelled (or left unanswered) is a decision, not a failure.
            cancelled = isinstance(exc, LoginCancelled)
            self._set(TunnelState.CLOSED if cancelled else TunnelState.FAILED, reason)
            raise
        self._set(TunnelState.UP, f"{self.spec.label} on {self.spec.bind}:{self.local_port}")
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"tunnel-{self.id}", daemon=True
        )
        self._supervisor.start()

    def _supervise(self) -> None:
        interval = float(self.session.settings.keepalive_interval)
        while not self._stop.is_set():
            if self.state is TunnelState.UP:
                if self._stop.wait(interval) or self._healthy(interval):
                    continue
                self._recover(f"the path to {self.spec.host.alias} was lost")
            elif self.state is TunnelState.NEEDS_INPUT:
                answered = self._wake.wait(interval)
                self._wake.clear()
                if self._stop.is_set():
                    return
                waiting_on = self._waiting_on
                if answered or (waiting_on is not None and waiting_on.alive()):
                    self._recover(f"logging in again for {self.spec.label}")
            else:
                return

    def _healthy(self, interval: float) -> bool:
        """Probe both hops; drop the transports that no longer answer."""
        bastion, host = self._links()
        transport = host.transport
        if bastion.alive() and host.alive() and transport and responsive(transport, interval):
            return True
        bastion_dead = not bastion.alive() or (
            bastion.transport is not None and not responsive(bastion.transport, interval)
        )
        if bastion_dead:
            bastion.drop()
        host.drop()
        return False

    def _recover(self, why: str) -> None:
        """Log in again until the tunnel is up, waits for input, fails or is closed."""
        self._set(TunnelState.RECONNECTING, why)
        delay = BACKOFF_START
        while not self._stop.is_set():
            try:
                self._connect()
            except LoginCancelled as exc:
                # Nobody was there to answer, or the person declined this time: either way
                # nothing was sent, and a front end may still answer later.
                self._set(TunnelState.NEEDS_INPUT, str(exc), attempt=True)
                return
            except (AuthError, HostKeyError) as exc:
                self.forwarder.close()
                self._set(TunnelState.FAILED, exc.message, attempt=True)
                return
            except Exception as exc:  # anything else is worth another try, never the end
                if not isinstance(exc, BastionctlError):
                    log.exception("%s: unexpected failure while reconnecting", self.spec.label)
                reason = exc.message if isinstance(exc, BastionctlError) else repr(exc)
                with self._changed:
                    self._record(reason)
                    self._attempts += 1
                    self._changed.notify_all()
                wait = min(BACKOFF_CAP, delay) * random.uniform(0.8, 1.2)
                log.info("%s: %s; retrying in %.1f s", self.spec.label, reason, wait)
                if self._stop.wait(wait):
                    return
                delay *= 2
                continue
            self.waiting_for = None
            self._waiting_on = None
            message = f"{self.spec.label} is back on port {self.local_port}"
            self._set(TunnelState.UP, message, attempt=True)
            return

    def answer(self, session: Session) -> None:
        """`session`'s front end answers the login this tunnel waits on.

        Returns once the tunnel is up, failed, or waits again; while the path is still being
        rebuilt (the bastion unreachable, say), for at most three connect timeouts.
        """
        patience = 3 * float(session.settings.connect_timeout)
        with self._changed:
            if self.state is not TunnelState.NEEDS_INPUT:
                raise UsageError(
                    f"tunnel {self.id} is {self.state.value}: it waits for no answer",
                    "see `bastionctl tunnel list`",
                )
            self.session = session
            for link in self._links():
                link.allow_retry()  # a person is here to answer again
            attempts = self._attempts
            deadline = time.monotonic() + patience
            self._wake.set()
            while not self._stop.is_set():
                attempted = self._attempts > attempts
                # (`in`, not `is not`: mypy keeps self.state narrowed from the check above)
                settled = self.state not in (TunnelState.RECONNECTING,)
                if attempted and (settled or time.monotonic() > deadline):
                    return
                self._changed.wait(timeout=0.5)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._changed:
            self._changed.notify_all()
            timer, self._digest_timer = self._digest_timer, None
        if timer is not None:
            timer.cancel()
        self.forwarder.close()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=5)
        self._set(TunnelState.CLOSED, self.spec.label)


class TunnelManager:
    """Opens and tracks the tunnels of one process; the CLI, the TUI and the agent share it.

    `process` names the process in tunnel lists: agent, foreground or tui. Creating a manager
    chooses the process's data path (ssh.datapath), the one thing it changes beyond itself.
    With `persist` (the agent) a bastion login outlives its last tunnel by the `persist`
    setting of that tunnel's session, so a tunnel opened again soon needs no code.
    """

    def __init__(
        self, on_event: EventCallback | None = None, *, process: str, persist: bool = False
    ) -> None:
        self.process = process
        self.persist = persist
        # Idle bastion logins kept for a while: alias -> time.monotonic() they close.
        self._idle: dict[str, float] = {}
        # Who hears one tunnel's events besides on_event (the terminal that holds it).
        self._listeners: dict[TunnelId, EventCallback] = {}
        self.pid = os.getpid()
        self.on_event = on_event or (lambda _event: None)
        self.data_path = datapath.install()
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._tunnels: dict[int, ManagedTunnel] = {}
        self._bastions: dict[str, _Link] = {}
        self._hosts: dict[tuple[str, str], _Link] = {}
        # What each link was made for (a bastion; a bastion and host), to notice a change.
        self._endpoints: dict[object, object] = {}

    def _emit(self, event: TunnelEvent) -> None:
        log.info("tunnel %s %s: %s", event.tunnel, event.state.value, event.message)
        self.on_event(event)
        listener = self._listeners.get(event.tunnel)
        if listener is not None:
            listener(event)

    def _bastion_link(self, bastion: Bastion) -> _Link:
        stale = None
        with self._lock:
            link = self._bastions.get(bastion.alias)
            # A long-lived process (the agent) sees a config edited meanwhile: a bastion
            # whose address or login changed gets a new link, not the old one's.
            if link is None or self._endpoints.get(bastion.alias) != bastion:
                stale = link
                link = _Link(
                    bastion.alias,
                    lambda session: connect_bastion(bastion, session),
                    self._logged_in,
                )
                self._bastions[bastion.alias] = link
                self._endpoints[bastion.alias] = bastion
        if stale is not None:
            stale.drop()
        return link

    def _host_link(self, bastion: Bastion, host: Host) -> _Link:
        key = (bastion.alias, host.alias)
        stale = None
        with self._lock:
            link = self._hosts.get(key)
            if link is None or self._endpoints.get(key) != (bastion, host):
                stale = link
                link = _Link(
                    host.alias,
                    lambda session: connect_through(
                        self._bastion_link(bastion).get(session), bastion, host, session
                    ),
                    self._logged_in,
                )
                self._hosts[key] = link
                self._endpoints[key] = (bastion, host)
        if stale is not None:
            stale.drop()
        return link

    def _logged_in(self) -> None:
        """A transport came up: tunnels waiting for it need no answer any more."""
        for tunnel in self.list():
            waiting_on = tunnel._waiting_on
            if tunnel.state is TunnelState.NEEDS_INPUT and waiting_on and waiting_on.alive():
                tunnel._wake.set()

    def bastion_logins(self, alias: str) -> int:
        link = self._bastions.get(alias)
        return link.logins if link else 0

    def open(
        self, spec: TunnelSpec, session: Session, listener: EventCallback | None = None
    ) -> ManagedTunnel:
        """Listen, log in (prompts go to `session`'s front end), forward; remember the port.

        `listener` hears this tunnel's events, from its first to its CLOSED.
        """
        tunnel = ManagedTunnel(self, TunnelId(self.pid, next(self._numbers)), spec, session)
        with self._lock:
            self._tunnels[tunnel.id.number] = tunnel
            self._idle.pop(spec.bastion.alias, None)  # in use again
            if listener is not None:
                self._listeners[tunnel.id] = listener
        try:
            tunnel.start()
        except BaseException:
            with self._lock:
                self._tunnels.pop(tunnel.id.number, None)
                self._listeners.pop(tunnel.id, None)
            if self.persist:  # a login that worked is kept for the next try
                self._drop_unused(session.settings.persist)
            raise
        # A port the user chose becomes the stable one; a collision's stand-in does not.
        PortBook().remember(spec_key(spec), tunnel.local_port, replace=spec.local_port_fixed)
        return tunnel

    def get(self, tunnel_id: TunnelId) -> ManagedTunnel:
        with self._lock:
            tunnel = self._tunnels.get(tunnel_id.number) if tunnel_id.pid == self.pid else None
        if tunnel is None:
            raise UsageError(f"no tunnel with id {tunnel_id}", "see `bastionctl tunnel list`")
        return tunnel

    def list(self) -> list[ManagedTunnel]:
        with self._lock:
            return sorted(self._tunnels.values(), key=lambda t: t.id)

    def close(self, tunnel_id: TunnelId) -> None:
        tunnel = self.get(tunnel_id)
        with self._lock:
            self._tunnels.pop(tunnel_id.number, None)
        tunnel.close()
        with self._lock:
            self._listeners.pop(tunnel_id, None)
        self._drop_unused(tunnel.session.settings.persist)

    def close_all(self) -> None:
        for tunnel in self.list():
            self.close(tunnel.id)
        with self._lock:
            self._idle.clear()
        for link in [*self._hosts.values(), *self._bastions.values()]:
            link.drop()

    def _drop_unused(self, persist: float = 0.0) -> None:
        """Close the logins no tunnel uses; with `persist`, a bastion's (and its targets')
        only `persist` seconds from now."""
        with self._lock:
            used_hosts = {(t.spec.bastion.alias, t.spec.host.alias) for t in self._tunnels.values()}
            used_bastions = {b for b, _ in used_hosts}
            if self.persist and persist > 0:
                closes = time.monotonic() + persist
                for alias, link in self._bastions.items():
                    if alias not in used_bastions and alias not in self._idle and link.alive():
                        self._idle[alias] = closes
            kept = set(self._idle)
            idle = [
                link
                for key, link in self._hosts.items()
                if key not in used_hosts and key[0] not in kept
            ]
            idle += [
                link
                for key, link in self._bastions.items()
                if key not in used_bastions and key not in kept
            ]
        for link in idle:
            link.drop()

    def idle_logins(self) -> dict[str, float]:
        """The bastion logins kept with no tunnel: alias -> time.monotonic() they close."""
        with self._lock:
            return dict(self._idle)

    def used_logins(self) -> dict[str, int]:
        """The bastions the tunnels use: alias -> how many tunnels."""
        used: dict[str, int] = {}
        for tunnel in self.list():
            alias = tunnel.spec.bastion.alias
            used[alias] = used.get(alias, 0) + 1
        return used

    def expire_idle(self, bastion: str | None = None, *, now: bool = False) -> tuple[str, ...]:
        """Close the idle logins whose time has come (or, with `now`, every one, or
        `bastion`'s), and those whose connection died meanwhile; the aliases closed."""
        at = time.monotonic()
        with self._lock:
            due = [
                alias
                for alias, closes in self._idle.items()
                if (now and bastion in (None, alias))
                or closes <= at
                or not self._bastions[alias].alive()
            ]
            for alias in due:
                del self._idle[alias]
            links = [link for key, link in self._hosts.items() if key[0] in due]
            links += [self._bastions[alias] for alias in due]
        for link in links:
            link.drop()
        return tuple(sorted(due))

    def __enter__(self) -> TunnelManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_all()
