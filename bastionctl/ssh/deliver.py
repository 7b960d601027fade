"""Channel data written straight to the local client socket by the transport's own thread.

A forwarded connection otherwise hands every packet from the transport thread to a
forwarding thread (a condition-variable wake-up and a GIL hand-over) before it reaches the
client: that hop is a large part of the extra round-trip time over OpenSSH. Here the
transport thread sends each packet to the client without blocking; only what the client does
not take at once is queued for the forwarding thread, which writes it with blocking sends.
Flow control stays exact: the server's window is reopened only for bytes the client socket
has accepted, so a slow client holds at most one window of data in memory.

A forwarded connection (`submit` given) has no thread of its own waiting for that: the queue
is drained by a pooled worker, started only when something is queued, and at the channel's
EOF the transport thread shuts the client's write side itself when nothing is queued, then
runs what was to follow (`when_done`) in the same thread: no thread waits to be woken for it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from collections.abc import Callable

import paramiko

from bastionctl.ssh import seam
from bastionctl.ssh.workers import Task
from bastionctl.system import api


class SocketDelivery:
    """Delivers a channel's data into `sock`.

    Without `submit`, `run()` is a thread's slow path, returning at EOF. With it, queued data
    is sent by tasks handed to `submit`, the client's write side is shut at EOF, and what was
    given to `when_done()` runs once that is done (or the client failed).
    """

    def __init__(
        self,
        channel: paramiko.Channel,
        sock: socket.socket,
        counted: Callable[[int], None],
        submit: Callable[[Task], None] | None = None,
    ) -> None:
        self._channel = channel
        self._sock = sock
        self._counted = counted
        self._cv = threading.Condition(threading.Lock())
        self._queued: deque[bytes] = deque()
        self._queued_size = 0
        self._sending = False  # run() holds data taken off the queue
        self._eof = False
        self._broken = False  # the client socket failed: later data is dropped
        self._unsent_ack = 0  # window the transport thread could not reopen itself
        self._submit = submit
        self._draining = False  # a submitted drain runs or is about to
        self._done = False
        self._then: list[Callable[[], None]] = []
        # A send that never blocks; where there is none (Windows) every packet takes run().
        self._dontwait = api.dontwait_flag()

    @property
    def queued(self) -> int:
        """Bytes received from the server that the client has not taken yet."""
        with self._cv:
            return self._queued_size

    def start(self) -> None:
        """Take over the channel's receive buffer (what it already holds comes first)."""
        seam.redirect(self._channel, self)

    def queue(self, chunk: bytes) -> None:
        with self._cv:
            self._queue(chunk)

    def _queue(self, chunk: bytes) -> None:
        self._queued.append(chunk)
        self._queued_size += len(chunk)
        self._wake()

    def _wake(self) -> None:
        """(Holding `_cv`.) There is work for run(), or for a drain to submit."""
        if self._submit is None:
            self._cv.notify()
        elif not self._draining and not self._done:
            self._draining = True
            self._submit(self._drain)

    def feed(self, chunk: bytes) -> None:
        """Called by the transport thread for every data packet."""
        if not chunk:
            return
        sent = 0
        with self._cv:
            if self._broken:
                return
            if self._dontwait is not None and not self._queued_size and not self._sending:
                try:
                    sent = self._sock.send(chunk, self._dontwait)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self._broken = True
                    self._cv.notify()
                    sent = -1
            if 0 <= sent < len(chunk):
                self._queue(chunk[sent:] if sent else chunk)
        if sent < 0:
            if self._submit is not None:
                self._finish()
            return
        if sent:
            self._counted(sent)
            ack = seam.consumed(self._channel, sent)
            if ack and not seam.reopen_now(self._channel, ack):
                with self._cv:
                    self._unsent_ack += ack
                    self._wake()

    def close(self) -> None:
        """The channel's EOF: the client's write side is shut once the queue is sent."""
        with self._cv:
            self._eof = True
            if self._submit is None:
                self._cv.notify()
                return
            if self._draining or self._queued or self._unsent_ack:
                self._wake()  # the drain finishes it
                return
        self._finish()

    def _finish(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)
        with self._cv:
            if self._done:
                return
            self._done = True
            then, self._then = self._then, []
        for step in then:
            step()

    def when_done(self, then: Callable[[], None]) -> None:
        """(With `submit`.) Run `then` once the client's write side is shut, or the client
        failed: now if so, else in the thread that finishes it (maybe the transport's)."""
        with self._cv:
            if not self._done:
                self._then.append(then)
                return
        then()

    def _drain(self) -> None:
        finished = False
        try:
            while not finished and self._step(block=False):
                finished = self._eof_sent
        finally:
            if finished or self._broken:
                self._finish()

    def run(self) -> None:
        """Send what the transport thread queued; returns at EOF or when the client fails."""
        while self._step(block=True) and not self._eof_sent:
            pass

    _eof_sent = False

    def _step(self, block: bool) -> bool:
        """Send what is queued, reopen the window; False when the client failed, or (not
        `block`) when nothing was there: then the drain has ended. Sets `_eof_sent` at EOF."""
        with self._cv:
            while block and not (self._queued or self._eof or self._broken or self._unsent_ack):
                self._cv.wait()
            if self._broken:
                self._draining = False
                return False
            if not block and not (self._queued or self._unsent_ack or self._eof):
                self._draining = False
                return False
            chunks, self._queued = self._queued, deque()
            size, self._queued_size = self._queued_size, 0
            ack, self._unsent_ack = self._unsent_ack, 0
            done = self._eof and not chunks
            self._sending = bool(chunks)
        if chunks:
            try:
                self._sock.sendall(b"".join(chunks))
            except OSError:
                with self._cv:
                    self._broken = True
                    self._draining = False
                return False
            finally:
                with self._cv:
                    self._sending = False
            self._counted(size)
            ack += seam.consumed(self._channel, size)
        if ack:
            seam.reopen(self._channel, ack)
        if done:
            self._eof_sent = True
        return True
