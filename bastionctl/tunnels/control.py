"""Per-process control sockets: how `tunnel list` / `tunnel stop` reach every process's tunnels.

Each bastionctl process that holds tunnels listens on `<runtime>/tunnels/<name>.sock`. The
socket is a privilege boundary (it leads to authenticated paths into a private network), so
the directory is 0700, the socket 0600, and every peer's uid is checked with SO_PEERCRED.
What is said on it is in `protocol`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from bastionctl import paths
from bastionctl.errors import BastionctlError, ProtocolError
from bastionctl.tunnels import protocol
from bastionctl.tunnels.protocol import Failed, Message, Reply, Request

log = logging.getLogger(__name__)


def sockets_dir() -> Path:
    return paths.private_dir(paths.runtime_dir() / "tunnels")


def agent_socket() -> Path:
    return sockets_dir() / "agent.sock"


def process_socket(pid: int) -> Path:
    """The control socket of a foreground tunnel or TUI process."""
    return sockets_dir() / f"{pid}.sock"


class Connection:
    """One control conversation over a Unix socket: typed messages, one per line."""

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

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._reader.close()
        with contextlib.suppress(OSError):
            self.sock.close()


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


Handler = Callable[[Request, Connection], Reply]
# One staging name per process: servers of one process start one after another.
_staging_lock = threading.Lock()


class ControlServer:
    """Serves `handler` on a Unix socket owned by, and only reachable for, this user."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._sock: socket.socket | None = None
        self._closing = threading.Event()

    def start(self) -> None:
        """Listen on `path`; the file appears only once connections are accepted."""
        paths.private_dir(self.path.parent)
        # Bound and listening under a temporary name first, then renamed into place: whoever
        # sees the file can connect (a starting agent is not mistaken for a dead one). The
        # name is no longer than the final one: Unix socket paths are short (108 bytes).
        staging = self.path.with_name(f".{os.getpid()}.s")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with _staging_lock:
            staging.unlink(missing_ok=True)
            # The umask makes the socket 0600 from the moment it exists, with no window.
            old = os.umask(0o177)
            try:
                sock.bind(str(staging))
            finally:
                os.umask(old)
            try:
                sock.listen(16)
                os.replace(staging, self.path)
            except OSError:
                sock.close()
                staging.unlink(missing_ok=True)
                raise
        self._sock = sock
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
            uid = peer_uid(client)
            if uid != os.getuid():
                log.warning("refused a control connection from uid %s", uid)
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
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def connect(path: Path, timeout: float | None = 10) -> Connection:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return Connection(sock)


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
    for path in sorted(sockets_dir().glob("*.sock")):
        try:
            conn = connect(path, timeout=2)
        except (ConnectionRefusedError, FileNotFoundError):
            # Its process is gone (killed: it could not clean up); so is its pid file.
            for stale in (path, path.with_suffix(".pid")):
                stale.unlink(missing_ok=True)
            continue
        except OSError:
            continue
        conn.close()
        yield path
