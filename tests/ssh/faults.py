"""TCP proxies on 127.0.0.1 for a bad network: one that can go silent (a link down) or reset
its connections, and one that is slow.

FaultProxy: clients connect to `proxy.port` instead of the server's port. pause(): nothing
moves either way and nothing is closed, a dead path; resume(): what was held back is
delivered and the traffic flows again; cut(): every proxied connection is closed with RST, to
both sides.

SlowLink: a working path whose server-to-client direction carries `rate` bytes/s.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

from tests.ssh.loopback import Loopback, abort, close_quietly

BUFFER = 256 * 1024
POLL = 0.1  # how often a waiting pump looks at the pause / cut flags


class _Link:
    """One proxied connection: the client's socket and the upstream socket."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.cut = False
        self.lock = threading.Lock()
        self.running = 2

    def abort(self) -> None:
        """RST both ways: SO_LINGER 0, shutdown(SHUT_RD) to wake our readers, close."""
        self.cut = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()


class FaultProxy(Loopback):
    """A proxy in front of 127.0.0.1:`upstream_port` with pause/resume and cut."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        super().__init__(f"faultproxy-{upstream_port}")
        self.upstream = (upstream_host, upstream_port)
        self.accepted = 0  # connections accepted so far
        self._flowing = threading.Event()
        self._flowing.set()
        self._links: set[_Link] = set()

    @property
    def connections(self) -> int:
        """Proxied connections open right now."""
        with self._lock:
            return len(self._links)

    @property
    def paused(self) -> bool:
        return not self._flowing.is_set()

    def pause(self) -> None:
        """Stop forwarding both ways without closing anything: a silent dead path."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def cut(self) -> int:
        """Reset every proxied connection (RST to the client and to the upstream)."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.abort()
        return len(links)

    def _close_open(self) -> None:
        self._flowing.set()
        self.cut()

    def _accepted(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            abort(client)
            return
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(POLL)
        link = _Link(client, upstream)
        with self._lock:
            if self._stopping:
                link.abort()
                return
            self.accepted += 1
            self._links.add(link)
        self._spawn(self._pump, "up", link, client, upstream)
        self._spawn(self._pump, "down", link, upstream, client)

    def _wait_flowing(self, link: _Link) -> bool:
        """Block while paused; False once the link is cut."""
        while not self._flowing.wait(POLL):
            if link.cut:
                return False
        return not link.cut

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket) -> None:
        buffer = bytearray(BUFFER)
        view = memoryview(buffer)
        try:
            while self._wait_flowing(link):
                try:
                    count = src.recv_into(buffer)
                except TimeoutError:
                    continue
                if not count:
                    if not link.cut:
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                    break
                data = view[:count]
                while data and self._wait_flowing(link):
                    try:
                        sent = dst.send(data)
                    except TimeoutError:
                        continue
                    data = data[sent:]
                if data:
                    break
        except OSError:
            if not link.cut:
                # One side was reset: reset the other too, so each peer sees the failure.
                link.abort()
        finally:
            self._finish(link)

    def _finish(self, link: _Link) -> None:
        with link.lock:
            link.running -= 1
            last = link.running == 0
        if last:
            for sock in (link.client, link.upstream):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._links.discard(link)


class SlowLink(Loopback):
    """A TCP proxy on 127.0.0.1 whose server-to-client direction carries `rate` bytes/s.

    A slow but working path (a thin VPN, a congested uplink): nothing is lost or held back
    for good, the client's direction goes at full speed. Threads are named `slowlink-*`.
    """

    BACKLOG = 8
    CHUNK = 8 * 1024

    def __init__(self, upstream_port: int, rate: int) -> None:
        super().__init__("slowlink")
        self.upstream = ("127.0.0.1", upstream_port)
        self.rate = rate
        self._socks: list[socket.socket] = []

    def _accepted(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            if self._stopping:
                client.close()
                upstream.close()
                return
            self._socks += [client, upstream]
        self._spawn(self._pump, "up", client, upstream, None)
        self._spawn(self._pump, "down", upstream, client, self.rate)

    def _close_open(self) -> None:
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            close_quietly(sock)

    def _pump(self, src: socket.socket, dst: socket.socket, rate: int | None) -> None:
        try:
            while data := src.recv(self.CHUNK if rate else 256 * 1024):
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
