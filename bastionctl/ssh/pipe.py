"""A faster receive buffer for paramiko channels.

paramiko's BufferedPipe copies every packet into an array and copies it out again, and each
partial read moves everything still buffered behind it. Forwarding hundreds of MB through two
hops spends much of its time there. ChunkPipe keeps the packets as they came (a deque of
bytes) and joins them once per read; its behaviour (blocking, timeouts, close, the event used
by Channel.fileno) is BufferedPipe's. ssh.seam puts it in place, for bastionctl's channels only.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

from paramiko.buffered_pipe import BufferedPipe, PipeTimeout

if TYPE_CHECKING:
    _Base = BufferedPipe[bytes]  # generic only in the type stubs
else:
    _Base = BufferedPipe


class Redirect(Protocol):
    """Where a redirected pipe's data goes (see ssh.deliver)."""

    def feed(self, chunk: bytes) -> None: ...

    def queue(self, chunk: bytes) -> None:
        """Take a chunk received before the redirect; must not block or send."""

    def close(self) -> None: ...


class ChunkPipe(_Base):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._event: threading.Event | None = None
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._closed = False
        self._redirect: Redirect | None = None

    def redirect(self, target: Redirect) -> None:
        """From now on hand data and EOF to `target`, first what is buffered, in order.

        The pipe's own lock orders this against the transport thread's feed(), so no
        packet can land in the buffer after it was handed over.
        """
        with self._lock:
            self._redirect = target
            for chunk in self._chunks:
                target.queue(chunk)
            self._chunks.clear()
            self._size = 0
            if self._closed:
                target.close()

    def set_event(self, event: threading.Event) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._size:
                event.set()
            else:
                event.clear()

    def feed(self, data: bytes | str) -> None:
        chunk = data.encode() if isinstance(data, str) else bytes(data)
        with self._lock:
            redirect = self._redirect
            if redirect is None:
                self._append(chunk)
                return
        # Only the transport thread feeds, so order holds outside the lock.
        redirect.feed(chunk)

    def _append(self, chunk: bytes) -> None:
        if self._event is not None:
            self._event.set()
        if chunk:
            self._chunks.append(chunk)
            self._size += len(chunk)
        self._cv.notify_all()

    def read_ready(self) -> bool:
        with self._lock:
            return self._size > 0

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        with self._lock:
            if not self._size:
                if self._closed:
                    return b""
                if timeout == 0.0:
                    raise PipeTimeout()
                while not self._size and not self._closed:
                    then = time.time()
                    self._cv.wait(timeout)
                    if timeout is not None:
                        timeout -= time.time() - then
                        if timeout <= 0.0:
                            raise PipeTimeout()
            out = self._take(nbytes)
            if not self._size and self._event is not None and not self._closed:
                self._event.clear()
            return out

    def _take(self, nbytes: int) -> bytes:
        parts: list[bytes] = []
        need = nbytes
        chunks = self._chunks
        while need > 0 and chunks:
            chunk = chunks[0]
            if len(chunk) <= need:
                parts.append(chunks.popleft())
                need -= len(chunk)
            else:
                parts.append(chunk[:need])
                chunks[0] = chunk[need:]
                need = 0
        self._size -= nbytes - need
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def empty(self) -> bytes:
        with self._lock:
            out = b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            if self._event is not None and not self._closed:
                self._event.clear()
            return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cv.notify_all()
            if self._event is not None:
                self._event.set()
            redirect = self._redirect
        if redirect is not None:
            redirect.close()

    def __len__(self) -> int:
        with self._lock:
            return self._size
