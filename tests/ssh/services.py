"""Small TCP services on 127.0.0.1, in threads: what the tunnels in tests lead to.

echo     sends back what it reads
sink     reads to EOF, answers the sha256 hex of it and "\\n"
source   reads "N\\n", sends N bytes of bastionctl.lab.standin.pattern(N), closes
greeter  sends GREETING as soon as a client connects (as MySQL's handshake does), then echoes
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

from bastionctl.lab.standin import MODES
from tests.ssh.loopback import Loopback, close_quietly

GREETING = b"bastionctl greeter 1.0 ready\n"

Handler = Callable[[socket.socket], None]


def _greeter(conn: socket.socket) -> None:
    conn.sendall(GREETING)
    MODES["echo"](conn)


HANDLERS: dict[str, Handler] = {**MODES, "greeter": _greeter}


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (the OS's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def refused_port() -> int:
    """A port on 127.0.0.1 where a connection is refused: nothing listens there."""
    return free_port()


class Service(Loopback):
    """One TCP service (`kind` in HANDLERS) on 127.0.0.1, every connection in a thread."""

    def __init__(self, kind: str) -> None:
        if kind not in HANDLERS:
            raise ValueError(f"unknown service kind {kind!r} ({', '.join(sorted(HANDLERS))})")
        super().__init__(f"svc-{kind}")
        self.kind = kind
        self.handler = HANDLERS[kind]
        self.connections = 0  # accepted so far
        self._conns: set[socket.socket] = set()

    def _accepted(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._stopping:
                conn.close()
                return
            self.connections += 1
            number = self.connections
            self._conns.add(conn)
        self._spawn(self._serve, str(number), conn)

    def _close_open(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            close_quietly(conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            with contextlib.suppress(OSError, ValueError):
                self.handler(conn)
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()


def start_services(kinds: tuple[str, ...] = tuple(sorted(HANDLERS))) -> dict[str, Service]:
    """One started Service per kind."""
    started: dict[str, Service] = {}
    try:
        for kind in kinds:
            service = Service(kind)
            service.start()
            started[kind] = service
    except BaseException:
        for service in started.values():
            service.stop()
        raise
    return started
