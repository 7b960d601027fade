"""Per-process control sockets: how `tunnel list` / `tunnel stop` reach every process's tunnels.

Each bastionctl process that holds tunnels serves one, published in `<runtime>/tunnels/` as
`<name>.sock` (a Unix socket) or `<name>.tcp` (a loopback port, where there are no Unix
sockets). It is a privilege boundary: the channel (bastionctl.system.channel) lets only this
user's processes talk, and checks both ends. What is said on it is in `protocol`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from bastionctl.errors import BastionctlError, ProtocolError
from bastionctl.system import channel
from bastionctl.system.files import private_dir, runtime_dir
from bastionctl.tunnels import protocol
from bastionctl.tunnels.protocol import Failed, Message, Reply, Request

log = logging.getLogger(__name__)


def sockets_dir() -> Path:
    return private_dir(runtime_dir() / "tunnels")


def agent_socket() -> Path:
    return channel.endpoint(sockets_dir(), "agent")


def process_socket(pid: int) -> Path:
    """The control socket of a foreground tunnel or TUI process."""
    return channel.endpoint(sockets_dir(), str(pid))


class Connection:
    """One control conversation: typed messages, one per line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = sock.makefile("rb")

    def send(self, message: Message) -> None:
        self.sock.sendall(protocol.encode(message))

    def receive(self) -> Message | None:
        """The next message; None when the peer hung up. ProtocolError for a bad one."""
        line = self._reader.readline(protocol.MAX_LINE)
        if not line:
            return None
        return protocol.decode(line)

    def finish(self) -> None:
        """Nothing more from this side (a half-close): the peer may still answer."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._reader.close()
        with contextlib.suppress(OSError):
            self.sock.close()


# None: the handler has had the whole conversation itself (an attachment); it ends there.
Handler = Callable[[Request, Connection], Reply | None]


class ControlServer:
    """Serves `handler` on a Unix socket owned by, and only reachable for, this user."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._sock: socket.socket | None = None
        self._closing = threading.Event()

    def start(self) -> None:
        """Listen on `path`; the file appears only once connections are accepted."""
        private_dir(self.path.parent)
        self._sock = channel.listen(self.path)
        threading.Thread(target=self._serve, name="control", daemon=True).start()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._closing.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        conn = Connection(client)
        try:
            if not channel.admit(client):
                return
            while True:
                try:
                    request = conn.receive()
                except BastionctlError as exc:  # a message of another version or shape
                    conn.send(Failed.from_error(exc))
                    return
                if request is None:
                    return
                if not isinstance(request, protocol.REQUESTS):
                    conn.send(Failed.from_error(ProtocolError(f"{request.TYPE!r} is no request")))
                    return
                try:
                    reply = self.handler(request, conn)
                except BastionctlError as exc:
                    reply = Failed.from_error(exc)
                except Exception as exc:  # a bug here must still get the peer an answer
                    log.exception("the control request %s failed", request.TYPE)
                    why = f"internal error in bastionctl process {os.getpid()}: {exc}"
                    reply = Failed.from_error(BastionctlError(why))
                if reply is None:
                    return
                conn.send(reply)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._closing.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        channel.unpublish(self.path)


def connect(path: Path, timeout: float | None = 10) -> Connection:
    """A conversation with the process behind `path`: OSError when none listens there, a
    BastionctlError when it is not this user's."""
    return Connection(channel.connect(path, timeout))


def request(path: Path, message: Request, timeout: float = 10) -> Message | None:
    """One request and its reply (None: the process hung up)."""
    conn = connect(path, timeout)
    try:
        conn.send(message)
        return conn.receive()
    finally:
        conn.close()


def live_sockets() -> Iterator[Path]:
    """Every control socket with a process behind it; sockets of dead processes are removed."""
    return channel.live(sockets_dir())
