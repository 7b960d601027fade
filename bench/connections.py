"""New connections through a tunnel: rate and time to first byte, and what the tunnel keeps.

Each connection connects, sends 1 KiB, reads the 1 KiB echo back and closes; its time to
first byte runs from the start of connect() to the first byte of the echo (the channel open
and one round trip through both hops). `burst()` runs `total` of them, `concurrency` at a
time (one thread each: connect, echo, close, the next).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PAYLOAD = b"c" * 1024


@dataclass(frozen=True)
class Burst:
    seconds: float
    first_bytes: list[float]  # seconds, one per connection, sorted

    def per_second(self) -> float:
        return len(self.first_bytes) / self.seconds

    def percentile(self, share: float) -> float:
        values = self.first_bytes
        return values[min(len(values) - 1, int(len(values) * share))]


def one(port: int) -> float:
    """Seconds from connect() to the echo's first byte; the whole echo is checked."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(PAYLOAD)
        got = conn.recv(len(PAYLOAD))
        first = time.perf_counter() - started
        received = len(got)
        while received < len(PAYLOAD):
            chunk = conn.recv(len(PAYLOAD) - received)
            if not chunk:
                raise SystemExit(f"connection through port {port}: echo cut at {received} bytes")
            received += len(chunk)
    return first


def burst(port: int, total: int, concurrency: int = 1) -> Burst:
    times: list[float] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    share, extra = divmod(total, concurrency)

    def worker(count: int) -> None:
        mine = []
        try:
            for _ in range(count):
                mine.append(one(port))
        except (OSError, SystemExit) as exc:
            failures.append(exc)
        with lock:
            times.extend(mine)

    threads = [
        threading.Thread(target=worker, args=(share + (1 if n < extra else 0),))
        for n in range(concurrency)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"connections through port {port} failed: {failures[0]!r}")
    return Burst(elapsed, sorted(times))


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
    return kb / 1024


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int, idle: int, patience: float = 10.0) -> int:
    """The process's open fds once its closed connections are gone (at most `patience` s)."""
    deadline = time.monotonic() + patience
    count = open_fds(pid)
    while count > idle and time.monotonic() < deadline:
        time.sleep(0.1)
        count = open_fds(pid)
    return count
