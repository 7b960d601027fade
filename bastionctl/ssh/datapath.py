"""How bytes move between sockets and SSH channels: the fast path, or the plain one.

The fast path (ssh.deliver, ssh.wire, ssh.pipe) needs paramiko's private names (ssh.seam);
the plain path uses the public API only, like paramiko's demos/forward.py. `install()` picks
one for the process, once, when the tunnel manager starts:

- `BASTIONCTL_DATA_PATH=plain` asks for the plain path (`fast`, or unset, for the fast one);
- the fast path is taken only when `seam.problems()` finds every private name as expected;
  otherwise one warning line says why and the plain path is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import paramiko

from bastionctl.ssh import seam
from bastionctl.ssh.deliver import SocketDelivery
from bastionctl.ssh.wire import JumpSocket, ReadAhead, plain_jump_socket
from bastionctl.ssh.workers import Task

log = logging.getLogger(__name__)
SETTING = "BASTIONCTL_DATA_PATH"
CHUNK = 256 * 1024
# Larger than paramiko's defaults: fewer window adjustments for bulk data (measured in bench/).
WINDOW_SIZE = 2 * 1024 * 1024
MAX_PACKET_SIZE = 32768

Counted = Callable[[int], None]


@dataclass(frozen=True)
class DataPath:
    name: str
    fast: bool

    def transport_socket(self, sock: socket.socket) -> ReadAhead:
        """What a transport to a bastion reads its TCP connection through."""
        return ReadAhead(sock)  # plain socket calls: both paths

    def jump_socket(self, channel: paramiko.Channel) -> ReadAhead:
        """What a transport to a target reads the bastion's channel through."""
        return JumpSocket(channel) if self.fast else ReadAhead(plain_jump_socket(channel))

    def open_channel(
        self,
        transport: paramiko.Transport,
        destination: tuple[str, int],
        origin: tuple[str, int],
        timeout: float,
    ) -> paramiko.Channel:
        """A `direct-tcpip` channel; raises paramiko.ChannelException when the server refuses."""

        def open_it() -> paramiko.Channel:
            return transport.open_channel(
                "direct-tcpip",
                destination,
                origin,
                window_size=WINDOW_SIZE,
                max_packet_size=MAX_PACKET_SIZE,
                timeout=timeout,
            )

        if not self.fast:
            return open_it()
        with seam.chunk_pipes():
            return open_it()

    def open_started(
        self,
        transport: paramiko.Transport,
        destination: tuple[str, int],
        origin: tuple[str, int],
        answered: Callable[[paramiko.Channel | None, Exception | None], None],
    ) -> None:
        """(Fast path only.) Send a `direct-tcpip` open without waiting for the answer:
        `answered` gets it in the transport's thread (ssh.seam.open_started)."""
        if not self.fast:
            raise RuntimeError("the plain data path opens channels with open_channel()")
        seam.open_started(transport, destination, origin, WINDOW_SIZE, MAX_PACKET_SIZE, answered)

    def send_now(self, channel: paramiko.Channel, take: Callable[[int], bytes]) -> int | None:
        """(Fast path, in the transport's thread.) Send `take(limit)` on `channel` if that
        cannot block (ssh.seam.send_now); None when it could, or on the plain path."""
        return seam.send_now(channel, take) if self.fast else None

    def delivery(
        self,
        channel: paramiko.Channel,
        client: socket.socket,
        counted: Counted,
        submit: Callable[[Task], None],
    ) -> Delivery:
        """What copies the channel's data into `client`, started; blocking work goes to `submit`.

        What is given to its when_done() runs once the client's write side is shut at the
        channel's EOF, or the client failed.
        """
        if not self.fast:
            plain = PlainDelivery(channel, client, counted)
            submit(plain.run)
            return plain
        delivery = SocketDelivery(channel, client, counted, submit)
        delivery.start()
        return delivery


class Delivery(Protocol):
    @property
    def queued(self) -> int:
        """Bytes received from the server that the client has not taken yet (held by us)."""

    def when_done(self, then: Callable[[], None]) -> None:
        """Run `then` once done: now if so, else in the thread that finishes the delivery."""


class PlainDelivery:
    """Channel to socket with `recv` and `sendall`; paramiko holds what the client has not taken."""

    queued = 0

    def __init__(self, channel: paramiko.Channel, client: socket.socket, counted: Counted) -> None:
        self._channel = channel
        self._client = client
        self._counted = counted
        self._lock = threading.Lock()
        self._done = False
        self._then: list[Callable[[], None]] = []

    def run(self) -> None:
        try:
            while data := self._channel.recv(CHUNK):
                self._client.sendall(data)
                self._counted(len(data))
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            with contextlib.suppress(OSError):
                self._client.shutdown(socket.SHUT_WR)
            with self._lock:
                self._done = True
                then, self._then = self._then, []
            for step in then:
                step()

    def when_done(self, then: Callable[[], None]) -> None:
        with self._lock:
            if not self._done:
                self._then.append(then)
                return
        then()


FAST = DataPath("fast", fast=True)
PLAIN = DataPath("plain", fast=False)
_active: DataPath | None = None


def install() -> DataPath:
    """Choose this process's data path (once) and put what it needs in place."""
    global _active
    if _active is not None:
        return _active
    wanted = os.environ.get(SETTING, "fast") or "fast"
    if wanted not in ("fast", "plain"):
        log.warning("%s=%s is neither 'fast' nor 'plain'; using the fast path", SETTING, wanted)
        wanted = "fast"
    if wanted == "plain":
        _active = PLAIN
        return _active
    problems = seam.problems()
    if problems:
        log.warning(
            "paramiko %s no longer fits bastionctl's fast data path (%s); using the plain path",
            paramiko.__version__,
            ", ".join(problems),
        )
        _active = PLAIN
        return _active
    seam.install()
    _active = FAST
    return _active


def active() -> DataPath:
    """The installed path; the plain one where no tunnel manager chose (e.g. `doctor`)."""
    return _active or PLAIN
