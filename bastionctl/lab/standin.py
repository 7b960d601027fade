"""TCP servers standing in for services with no real server here (named as such), and the
benchmark's data sink and source.

    python -m bastionctl.lab.standin --name "SQL Server stand-in" --bind 127.0.0.1 --port 1433
    --mode sink    reads to EOF, answers with the sha256 hex of what it got
    --mode source  reads "N\\n", sends N bytes of pattern() and closes
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import socket
import threading
from collections.abc import Callable

BLOCK = hashlib.sha256(b"bastionctl bench").digest() * 32768  # 1 MiB


def pattern(size: int) -> bytes:
    """The source's bytes: what a reader compares against."""
    return (BLOCK * (size // len(BLOCK) + 1))[:size]


def _echo(conn: socket.socket) -> None:
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    while count := conn.recv_into(buffer):
        conn.sendall(view[:count])


def _sink(conn: socket.socket) -> None:
    digest = hashlib.sha256()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    while count := conn.recv_into(buffer):
        digest.update(view[:count])
    conn.sendall(digest.hexdigest().encode() + b"\n")


def _source(conn: socket.socket) -> None:
    request = b""
    while not request.endswith(b"\n"):
        chunk = conn.recv(32)
        if not chunk:
            return
        request += chunk
    remaining = int(request)
    view = memoryview(BLOCK)
    while remaining > 0:
        step = min(remaining, len(BLOCK))
        conn.sendall(view[:step])
        remaining -= step


MODES: dict[str, Callable[[socket.socket], None]] = {
    "echo": _echo,
    "sink": _sink,
    "source": _source,
}


def _serve(handler: Callable[[socket.socket], None], conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn, contextlib.suppress(OSError, ValueError):
        handler(conn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=sorted(MODES), default="echo")
    args = parser.parse_args()
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((args.bind, args.port))
    server.listen(128)
    print(f"{args.name}: {args.mode} server on {args.bind}:{args.port}", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_serve, args=(MODES[args.mode], conn), daemon=True).start()


if __name__ == "__main__":
    main()
