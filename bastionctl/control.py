"""Per-process control sockets: how `tunnel list` / `tunnel stop` reach every process's tunnels.

Each bastionctl process that holds tunnels listens on `<runtime>/tunnels/<name>.sock`. The
socket is a privilege boundary (it leads to authenticated paths into a private network), so
the directory is 0700, the socket 0600, and every peer's uid is checked with SO_PEERCRED.
Messages are JSON, one object per line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bastionctl import paths
from bastionctl.errors import BastionctlError

log = logging.getLogger(__name__)
Message = dict[str, Any]
MAX_LINE = 1 << 20


def sockets_dir() -> Path:
    return paths.private_dir(paths.runtime_dir() / "tunnels")


def agent_socket() -> Path:
    return sockets_dir() / "agent.sock"


class Connection:
    """A JSON-lines conversation over one Unix socket connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = sock.makefile("rb")

    def send(self, message: Message) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self) -> Message | None:
        line = self._reader.readline(MAX_LINE)
        if not line:
            return None
        try:
            message = json.loads(line)
        except ValueError:
            raise BastionctlError(
                "a bastionctl control socket sent something that is not JSON"
            ) from None
        if not isinstance(message, dict):
            raise BastionctlError("a bastionctl control socket sent a malformed message")
        return message

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._reader.close()
        with contextlib.suppress(OSError):
            self.sock.close()


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


Handler = Callable[[Message, Connection], Message]


class ControlServer:
    """Serves `handler` on a Unix socket owned by, and only reachable for, this user."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._sock: socket.socket | None = None
        self._closing = threading.Event()

    def start(self) -> None:
        paths.private_dir(self.path.parent)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The umask makes the socket 0600 from the moment it exists, with no window.
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(16)
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
            if peer_uid(client) != os.getuid():
                log.warning("refused a control connection from uid %s", peer_uid(client))
                return
            while (request := conn.receive()) is not None:
                try:
                    reply = self.handler(request, conn)
                except BastionctlError as exc:
                    reply = error_reply(exc)
                conn.send(reply)
        except (OSError, BastionctlError):
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


def error_reply(exc: BastionctlError) -> Message:
    return {
        "ok": False,
        "error": exc.message,
        "hint": exc.hint,
        "exit": int(exc.exit_status),
        "kind": type(exc).__name__,
    }


def raise_for(reply: Message) -> Message:
    """Turn an error reply back into the error the serving process raised."""
    if reply.get("ok"):
        return reply
    from bastionctl import errors

    kind = getattr(errors, str(reply.get("kind")), errors.BastionctlError)
    if not (isinstance(kind, type) and issubclass(kind, errors.BastionctlError)):
        kind = errors.BastionctlError
    raise kind(str(reply.get("error", "unknown error")), reply.get("hint"))


def connect(path: Path, timeout: float | None = 10) -> Connection:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return Connection(sock)


def request(path: Path, message: Message, timeout: float = 10) -> Message:
    conn = connect(path, timeout)
    try:
        conn.send(message)
        reply = conn.receive()
    finally:
        conn.close()
    if reply is None:
        raise BastionctlError(f"the bastionctl process behind {path.name} hung up")
    return reply


def live_sockets() -> Iterator[Path]:
    """Every control socket with a process behind it; sockets of dead processes are removed."""
    for path in sorted(sockets_dir().glob("*.sock")):
        try:
            conn = connect(path, timeout=2)
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        except OSError:
            continue
        conn.close()
        yield path
