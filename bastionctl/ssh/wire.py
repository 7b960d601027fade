"""What a paramiko transport reads and writes through: a TCP socket, or a jump channel."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

import paramiko

from bastionctl.ssh.deliver import SocketDelivery

# Asked for so that the jump channel's whole window fits in the socket pair and the outer
# transport need not queue for the drain thread; the kernel may cap it (net.core.wmem_max),
# which only makes that slower path more frequent.
PAIR_BUFFER = 4 * 1024 * 1024
HEAD = 256
# Queued writes of the inner transport beyond which its sender waits for the writer.
OUT_QUEUE = 1024 * 1024
WRITE_PIECE = 64 * 1024


class ReadAhead:
    """A transport's socket read in large chunks into one reused buffer.

    paramiko reads a packet as a 16-byte header and then the rest, two reads (four system
    calls on a socket with a timeout) per packet; one large read serves many packets. The
    buffer is reused because `recv(256 KiB)` allocates (and maps) 256 KiB on every call,
    which costs more than the system call itself when a packet is small.
    """

    CHUNK = 256 * 1024

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray(self.CHUNK)
        self._view = memoryview(self._buffer)
        self._offset = 0
        self._end = 0
        # Bytes read from the socket so far: proof of life for a busy link (ssh.connect).
        self.received = 0
        # The first bytes the server sent: a failed handshake tells "not an SSH server" by it.
        self.head = b""

    def recv(self, size: int) -> bytes:
        if self._offset >= self._end:
            count = self._sock.recv_into(self._buffer)  # may raise socket.timeout
            if not count:
                return b""
            if not self.received:
                self.head = bytes(self._view[: min(count, HEAD)])
            self.received += count
            self._offset, self._end = 0, count
        end = min(self._offset + size, self._end)
        out = bytes(self._view[self._offset : end])
        self._offset = end
        return out

    def __getattr__(self, name: str) -> object:
        # send, settimeout, close, getpeername and whatever else paramiko asks a socket.
        return getattr(self._sock, name)


class JumpSocket(ReadAhead):
    """The outer (bastion) channel as the inner transport's socket.

    Reads come from one end of a socket pair that the outer transport's thread writes the
    channel's data into (ssh.deliver), so the inner transport waits in the kernel, not on a
    Python condition, and wakes without a hand-off through a channel buffer.

    Writes go straight into the channel while nobody else waits to send on the inner
    transport: then the write is the shortest way out (one connection, a round trip). A direct
    write holds the inner transport's send lock while the outer packet is built and sent, so
    when other senders queue behind it (many new connections at once) writes go to a queue
    instead, which a thread of this socket sends, several inner packets per outer write: the
    lock is free again as soon as the packet is queued.
    """

    def __init__(self, channel: paramiko.Channel) -> None:
        near, far = socket.socketpair()
        for end in (near, far):
            with contextlib.suppress(OSError):
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PAIR_BUFFER)
                end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PAIR_BUFFER)
        super().__init__(far)
        self._channel = channel
        self._near = near
        self._delivery = SocketDelivery(channel, near, lambda _count: None)
        self._delivery.start()
        threading.Thread(target=self._drain, name="jump-drain", daemon=True).start()
        self._contended: Callable[[], bool] = _never
        self._out_cv = threading.Condition(threading.Lock())
        self._out: list[bytes] = []
        self._out_size = 0
        self._writing = False  # the writer holds data taken off the queue
        self._writer: threading.Thread | None = None
        self._out_failed: str | None = None
        self._closed = False

    def watch(self, contended: Callable[[], bool]) -> None:
        """`contended()` tells whether another sender waits on the inner transport."""
        self._contended = contended

    def _drain(self) -> None:
        try:
            self._delivery.run()
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            # The channel's EOF (or a failure) becomes EOF for the inner transport.
            with contextlib.suppress(OSError):
                self._near.shutdown(socket.SHUT_WR)

    def send(self, data: bytes) -> int:
        # The inner transport's writes come one at a time (its packetizer's write lock), so
        # only the writer thread runs beside this.
        with self._out_cv:
            if self._out_failed is not None:
                raise OSError(self._out_failed)
            if not (self._out or self._writing or self._contended()):
                queued = False
            else:
                while self._out_size >= OUT_QUEUE and self._out_failed is None:
                    self._out_cv.wait()
                if self._out_failed is not None:
                    raise OSError(self._out_failed)
                self._out.append(data)
                self._out_size += len(data)
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_out, name="jump-out", daemon=True
                    )
                    self._writer.start()
                self._out_cv.notify_all()
                queued = True
        return len(data) if queued else self._channel.send(data)

    def _write_out(self) -> None:
        while True:
            with self._out_cv:
                while not self._out and not self._closed:
                    self._out_cv.wait()
                if self._closed:
                    return
                data = b"".join(self._out)
                self._out.clear()
                self._out_size = 0
                self._writing = True
                self._out_cv.notify_all()  # room in the queue
            try:
                self._send_all(data)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                with self._out_cv:
                    self._out_failed = f"the jump channel failed: {exc or type(exc).__name__}"
                    self._writing = False
                    self._out_cv.notify_all()
                return
            with self._out_cv:
                self._writing = False

    def _send_all(self, data: bytes) -> None:
        offset = 0
        while offset < len(data) and not self._closed:
            # A slice at most a packet or two long: the channel sends one packet per call.
            piece = data[offset : offset + WRITE_PIECE]
            try:
                sent = self._channel.send(piece)
            except TimeoutError:  # no window within the transport's poll interval: again
                continue
            if sent <= 0:
                raise EOFError("the jump channel is closed")
            offset += sent

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)
        self._channel.settimeout(timeout)

    def close(self) -> None:
        with self._out_cv:
            self._closed = True
            self._out_failed = self._out_failed or "the jump channel is closed"
            self._out_cv.notify_all()
        # paramiko's inner transport calls this as its thread ends; the bastion's transport
        # may be failing at that moment, and its error must not end that thread with a trace.
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self._channel.close()
        self._sock.close()
        self._near.close()

    def getpeername(self) -> object:
        return self._channel.getpeername()


def plain_jump_socket(channel: paramiko.Channel) -> socket.socket:
    """The jump channel as a real socket, through paramiko's public API only.

    One end of a socket pair goes to the inner transport; two threads copy between the other
    end and the channel with `recv` and `sendall`. Slower than JumpSocket (two more thread
    hand-overs per packet), but it needs nothing of paramiko's internals.
    """
    near, far = socket.socketpair()

    def inbound() -> None:  # channel -> inner transport
        try:
            while data := channel.recv(ReadAhead.CHUNK):
                near.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            with contextlib.suppress(OSError):
                near.shutdown(socket.SHUT_WR)

    def outbound() -> None:  # inner transport -> channel
        try:
            while data := near.recv(ReadAhead.CHUNK):
                channel.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.close()
            near.close()

    threading.Thread(target=inbound, name="jump-in", daemon=True).start()
    threading.Thread(target=outbound, name="jump-out", daemon=True).start()
    return far


def _never() -> bool:
    return False
