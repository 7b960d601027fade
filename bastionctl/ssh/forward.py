"""A local TCP listener whose connections are carried over SSH `direct-tcpip` channels.

Each accepted connection is one task on a pooled worker (ssh.workers) that copies the
client's bytes into its channel; the channel's data reaches the client from the transport's
thread (ssh.deliver), or through a second pooled task on the plain path. While the tunnel is up
(fast path), the accept thread sends the channel open itself and the server's answer, in the
transport's thread, sends what the client has sent so far and hands the connection to a
worker: no thread waits for the answer (a watchdog gives up after the connect timeout).
Otherwise the worker opens the channel, which may wait for a login or a reconnect.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paramiko

from bastionctl import sanitise
from bastionctl.errors import BastionctlError, ConnectError, PortInUseError
from bastionctl.model import hostport
from bastionctl.ssh import workers
from bastionctl.ssh.datapath import DataPath, Delivery
from bastionctl.system import api

log = logging.getLogger(__name__)

# Opens the SSH channel for one accepted connection; gets the client's (address, port).
ChannelOpener = Callable[[tuple[str, int]], paramiko.Channel]
# Hears why a connection could not be forwarded (one line, fit to show the user).
FailureSink = Callable[[str], None]
CHUNK = 256 * 1024
# How long a server may take to close a channel after both sides sent EOF.
CLOSE_GRACE = 5.0
# How often unanswered channel opens are checked for their timeout.
WATCH_INTERVAL = 1.0


class ChannelRefused(ConnectError):
    """The server refused a channel; `code` is its reason (RFC 4254, 5.1)."""

    def __init__(self, message: str, code: int, text: str) -> None:
        super().__init__(message)
        self.code = code
        self.text = text


class ChannelTimeout(ConnectError):
    """The server did not answer a channel request in time."""


def refusal(code: int, text: str, host: str, remote: tuple[str, int]) -> str:
    """Why `host` refused a channel to `remote`, from the server's reason code."""
    where = hostport(*remote)
    if code == paramiko.common.OPEN_FAILED_CONNECT_FAILED:
        if remote[0] in ("localhost", "127.0.0.1", "::1"):
            return f"nothing listens on {where} on {host} (connect failed)"
        return f"{host} could not connect to {where} (connect failed)"
    if code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED:
        return f"{host} does not allow forwarding to {where} (administratively prohibited)"
    reason = sanitise.line(text, 200).lower() or "no reason given"  # the server's own words
    return f"{host} could not open a channel to {where} ({reason}, code {code})"


def open_direct(
    transport: paramiko.Transport,
    path: DataPath,
    host: str,
    remote: tuple[str, int],
    origin: tuple[str, int],
    timeout: float,
) -> paramiko.Channel:
    """A `direct-tcpip` channel from `host` (the transport's server) to `remote`.

    Raises ChannelRefused with the server's reason, ChannelTimeout, or ConnectError when the
    connection to `host` fails meanwhile.
    """
    try:
        return path.open_channel(transport, remote, origin, timeout)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise open_failure(exc, transport, host, remote, timeout) from None


def open_failure(
    exc: BaseException | None,
    transport: paramiko.Transport,
    host: str,
    remote: tuple[str, int],
    timeout: float,
) -> ConnectError:
    """Why a channel to `remote` did not open: refused, timed out, or the connection failed."""
    if isinstance(exc, paramiko.ChannelException):
        text = sanitise.line(exc.text)
        return ChannelRefused(refusal(exc.code, text, host, remote), exc.code, text)
    if transport.is_active():  # a timeout: the transport is still fine
        return ChannelTimeout(
            f"{host} did not open a channel to {hostport(*remote)} within {timeout:g} s"
        )
    why = sanitise.line(str(exc)) or type(exc).__name__ if exc is not None else "connection lost"
    return ConnectError(
        f"the connection to {host} failed while opening a channel to {hostport(*remote)}: {why}"
    )


@dataclass(frozen=True)
class Route:
    """Where a tunnel's channels open while it is up: its logged-in transport, nothing to wait
    for but the server's answer."""

    transport: paramiko.Transport
    host: str
    remote: tuple[str, int]
    timeout: float

    def failure(self, exc: BaseException | None) -> ConnectError:
        return open_failure(exc, self.transport, self.host, self.remote, self.timeout)


RouteNow = Callable[[], "Route | None"]


@dataclass(eq=False)
class _Opening:
    """An accepted client whose channel open was sent and not answered yet."""

    client: socket.socket
    peer: tuple[str, int]
    route: Route


class LocalForwarder:
    def __init__(
        self,
        bind: str,
        port: int,
        open_channel: ChannelOpener,
        path: DataPath,
        on_failure: FailureSink | None = None,
        route_now: RouteNow | None = None,
    ) -> None:
        self.bind_address = bind
        self.requested_port = port
        self.open_channel = open_channel
        self.path = path
        self.on_failure = on_failure or (lambda _message: None)
        self.bytes_in = 0  # from the remote service to the local client
        self.bytes_out = 0
        self.active = 0
        self._lock = threading.Lock()
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._open: set[tuple[socket.socket, paramiko.Channel]] = set()
        # Channels past both EOFs that the server should close: when each is due (monotonic).
        self._unclosed: dict[paramiko.Channel, float] = {}
        self._deliveries: set[Delivery] = set()
        self._workers = workers.shared()
        # While the tunnel is up (a route), the accept thread sends a connection's channel open
        # itself and the transport thread hands the answer to a worker: no worker waits for it.
        self.route_now = route_now
        self._opening: dict[_Opening, float] = {}  # when each is given up (monotonic)
        self._watchdog: threading.Thread | None = None
        self._dontwait = api.dontwait_flag()

    @property
    def port(self) -> int:
        if not self._listeners:
            return self.requested_port
        return int(self._listeners[0].getsockname()[1])

    def addresses(self) -> list[str]:
        """The addresses listened on: `localhost` means both 127.0.0.1 and ::1."""
        return ["127.0.0.1", "::1"] if self.bind_address == "localhost" else [self.bind_address]

    def listen(self) -> int:
        """Bind and listen now, before any login, so a taken port costs no TOTP code."""
        port = self.requested_port
        try:
            for address in self.addresses():
                # Every address gets the port the first one got (the OS may pick it).
                self._listeners.append(self._bind(address, port))
                port = self.port
        except BaseException:
            self._close_listeners()
            raise
        return self.port

    def _bind(self, address: str, port: int) -> socket.socket:
        shown = hostport(address, port)
        try:
            family, kind, proto, _name, sockaddr = socket.getaddrinfo(
                address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
        except socket.gaierror as exc:
            raise ConnectError(f"cannot bind to {address!r}: {exc.strerror}") from None
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            listener.bind(sockaddr)
            listener.listen(64)
        except OSError as exc:
            listener.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"local port {port} is already in use on {shown}",
                    "stop what uses it or choose another with --local-port",
                ) from None
            raise ConnectError(f"cannot listen on {shown}: {exc.strerror}") from None
        return listener

    def start(self) -> None:
        if not self._listeners:
            self.listen()
        for listener in self._listeners:
            thread = threading.Thread(
                target=self._accept_loop,
                args=(listener,),
                name=f"forward-{self.port}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _close_listeners(self) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            # shutdown() wakes the accept() blocked in the other thread; close() alone
            # would leave the port bound until that thread returns.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def close(self) -> None:
        self._closing.set()
        self._close_listeners()
        with self._lock:
            pairs = list(self._open)
            unclosed, self._unclosed = list(self._unclosed), {}
            opening, self._opening = list(self._opening), {}
        for sock, channel in pairs:
            _close_quietly(sock, channel)
        for waiting in opening:
            waiting.client.close()
        for channel in unclosed:
            _close_channel(channel)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        self._workers.trim()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._closing.is_set():
            try:
                client, peer = listener.accept()
            except OSError:
                if self._closing.is_set():
                    return
                log.exception("accept failed on port %s", self.port)
                time.sleep(0.1)  # e.g. out of file descriptors: do not spin
                continue
            if self._open_started(client, peer):
                continue
            try:
                self._workers.submit(functools.partial(self._serve, client, peer))
            except RuntimeError:  # no thread can be started now
                log.exception("cannot serve a connection on port %s", self.port)
                client.close()

    def _open_started(self, client: socket.socket, peer: tuple[str, int]) -> bool:
        """Send the client's channel open from here if the tunnel is up (fast path): False
        when a worker must open it (it may log in or wait for a reconnect)."""
        route = self.route_now() if self.route_now is not None and self.path.fast else None
        if route is None:
            return False
        with contextlib.suppress(OSError):
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        opening = _Opening(client, (str(peer[0]), int(peer[1])), route)
        with self._lock:
            self._opening[opening] = time.monotonic() + route.timeout
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, name=f"forward-{self.port}-opens", daemon=True
                )
                self._watchdog.start()
        try:
            self.path.open_started(
                route.transport,
                route.remote,
                opening.peer,
                functools.partial(self._answered, opening),
            )
        except (paramiko.SSHException, EOFError, OSError, RuntimeError) as exc:
            self._give_up(opening, exc)
        return True

    def _answered(
        self, opening: _Opening, channel: paramiko.Channel | None, exc: Exception | None
    ) -> None:
        # The transport's thread, holding its lock: hand the rest to a worker.
        if not self._claim(opening):  # given up meanwhile (timed out, or the forwarder closed)
            if channel is not None:
                with contextlib.suppress(RuntimeError):
                    self._workers.submit(functools.partial(_close_channel, channel))
            return
        if channel is not None:
            self._send_first(opening.client, channel)
            task = functools.partial(self._serve_opened, opening.client, channel)
        else:
            failure = opening.route.failure(exc)
            task = functools.partial(self._refused, opening.client, opening.peer, failure)
        try:
            self._workers.submit(task)
        except RuntimeError:  # no thread can be started now
            log.exception("cannot serve a connection on port %s", self.port)
            opening.client.close()
            if channel is not None:  # closed by the next sweep (_close_overdue)
                with self._lock:
                    self._unclosed[channel] = time.monotonic()

    def _send_first(self, client: socket.socket, channel: paramiko.Channel) -> None:
        """(The transport's thread.) Send what the client has sent so far with the open's
        answer, before this thread goes on to other packets and before a worker wakes: a
        client that speaks first (RDP, HTTP) waits one hand-over less."""
        if self._dontwait is None:
            return
        take = functools.partial(_take, client, self._dontwait)
        try:
            sent = self.path.send_now(channel, take)
        except (OSError, EOFError, paramiko.SSHException):
            return  # the link failed: its transport ends, closing the channel and the client
        if sent:
            with self._lock:
                self.bytes_out += sent

    def _claim(self, opening: _Opening) -> bool:
        """Take `opening` off the waiting ones: False when its answer or give-up came first."""
        with self._lock:
            return self._opening.pop(opening, None) is not None

    def _give_up(self, opening: _Opening, exc: BaseException | None) -> None:
        if self._claim(opening):
            self._refused(opening.client, opening.peer, opening.route.failure(exc))

    def _watch(self) -> None:
        """Give up opens the server has not answered in time; leave when none was waiting
        for a while."""
        idle = 0.0
        while not self._closing.wait(WATCH_INTERVAL):
            now = time.monotonic()
            with self._lock:
                late = [opening for opening, due in self._opening.items() if due <= now]
                idle = 0.0 if self._opening else idle + WATCH_INTERVAL
                if idle >= workers.IDLE_EXIT:
                    self._watchdog = None
                    return
            for opening in late:
                self._give_up(opening, None)
            self._close_overdue()
        with self._lock:
            self._watchdog = None

    def _serve_opened(self, client: socket.socket, channel: paramiko.Channel) -> None:
        self._close_overdue()
        self._forward(client, channel)

    def _refused(self, client: socket.socket, peer: tuple[str, int], exc: Exception) -> None:
        message = exc.message if isinstance(exc, BastionctlError) else str(exc)
        log.info("connection from %s refused: %s", hostport(peer[0], peer[1]), message)
        self.on_failure(message)
        client.close()

    def _serve(self, client: socket.socket, peer: tuple[str, int]) -> None:
        self._close_overdue()
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            channel = self.open_channel((str(peer[0]), int(peer[1])))
        except Exception as exc:  # any failure: refuse this client, keep the listener
            self._refused(client, peer, exc)
            return
        self._forward(client, channel)

    def _forward(self, client: socket.socket, channel: paramiko.Channel) -> None:
        with self._lock:
            self.active += 1
            self._open.add((client, channel))
        try:
            delivery = self.path.delivery(channel, client, self._count_in, self._workers.submit)
        except (OSError, EOFError, paramiko.SSHException, RuntimeError):
            # the client or the channel failed; RuntimeError: no thread for the plain path
            self._finished(client, channel, None)
            return
        with self._lock:
            self._deliveries.add(delivery)
        try:
            self._client_to_channel(client, channel)
        finally:
            # The rest waits for the channel's EOF, but no thread waits for that: it runs in
            # whichever thread finishes the delivery (often the transport's), and this
            # worker is free for the next connection.
            delivery.when_done(functools.partial(self._finished, client, channel, delivery))

    def _finished(
        self, client: socket.socket, channel: paramiko.Channel, delivery: Delivery | None
    ) -> None:
        """The connection is over: the client's socket closes, the channel after it."""
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)
        client.close()
        # Never Channel.close() here: this may run inside paramiko's own Channel.close() or
        # EOF handling (ssh.deliver, the channel's buffer closing), holding the channel's lock.
        closing = not channel.closed and channel.eof_received
        if not (channel.closed or channel.eof_received):  # the client failed while data came
            with contextlib.suppress(RuntimeError):
                self._workers.submit(functools.partial(_close_channel, channel))
        with self._lock:
            if delivery is not None:
                self._deliveries.discard(delivery)
            self.active -= 1
            self._open.discard((client, channel))
            if closing:
                # Both sides sent EOF: the server closes the channel now (paramiko answers);
                # one still open after CLOSE_GRACE is closed by the next connection's worker,
                # or when the forwarder closes.
                self._unclosed[channel] = time.monotonic() + CLOSE_GRACE

    def _close_overdue(self) -> None:
        """Close channels whose server did not close them within CLOSE_GRACE of both EOFs."""
        now = time.monotonic()
        with self._lock:
            if not self._unclosed:
                return
            due = [channel for channel, deadline in self._unclosed.items() if deadline <= now]
            gone = [channel for channel in self._unclosed if channel.closed]
            for channel in {*due, *gone}:
                del self._unclosed[channel]
        for channel in due:
            _close_channel(channel)

    def _client_to_channel(self, client: socket.socket, channel: paramiko.Channel) -> None:
        # One buffer per worker thread, reused: recv(CHUNK) would allocate CHUNK bytes per
        # call, and a new buffer per connection would zero (and map) CHUNK bytes each time.
        view = _buffers.view()
        try:
            while True:
                count = client.recv_into(view)
                if not count:
                    break
                channel.sendall(bytes(view[:count]))
                with self._lock:
                    self.bytes_out += count
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.shutdown_write()

    def buffered(self) -> int:
        """Bytes held for local clients that read slower than the service sends."""
        with self._lock:
            deliveries = list(self._deliveries)
        return sum(delivery.queued for delivery in deliveries)

    def _count_in(self, count: int) -> None:
        with self._lock:
            self.bytes_in += count


class _Buffers(threading.local):
    def __init__(self) -> None:
        self._view: memoryview | None = None

    def view(self) -> memoryview:
        if self._view is None:
            self._view = memoryview(bytearray(CHUNK))
        return self._view


_buffers = _Buffers()


def _take(client: socket.socket, flag: int, limit: int) -> bytes:
    """Up to `limit` bytes the client has sent, without waiting: b"" when none are there, or
    when the client failed (its worker's next read tells that)."""
    try:
        return client.recv(limit, flag)
    except OSError:
        return b""


def _close_quietly(sock: socket.socket, channel: paramiko.Channel) -> None:
    # shutdown() wakes a thread blocked reading the socket and tells the client at once;
    # close() alone would leave both waiting.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    _close_channel(channel)
    sock.close()


def _close_channel(channel: paramiko.Channel) -> None:
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        channel.close()
