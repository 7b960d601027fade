"""A TCP echo server standing in for a service with no real server here (named as such).

python -m bastionctl.lab.standin --name "SQL Server stand-in" --bind 127.0.0.1 --port 1433
"""

from __future__ import annotations

import argparse
import socket
import threading


def _echo(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    with conn:
        try:
            while True:
                count = conn.recv_into(buffer)
                if not count:
                    break
                conn.sendall(view[:count])
        except OSError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((args.bind, args.port))
    server.listen(128)
    print(f"{args.name}: echo server on {args.bind}:{args.port}", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_echo, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
