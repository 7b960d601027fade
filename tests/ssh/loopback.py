"""What the test servers on 127.0.0.1 share: a listener, its accept thread, a clean stop.

SshServer, Service, FaultProxy and SlowLink are each a Loopback. start() binds 127.0.0.1:0,
listens and starts the accept thread, which hands every connection to `_accepted`; stop()
shuts the listener down, closes what is open (`_close_open`) and joins every thread started
with `_spawn` (and `_other_threads`). Each is a context manager too: started on entry,
stopped on exit.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

JOIN_TIMEOUT = 5.0


def abort(sock: socket.socket) -> None:
    """Close `sock` abruptly: SO_LINGER 0 makes the kernel send RST instead of FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def close_quietly(sock: socket.socket) -> None:
    """shutdown() first (wakes a thread blocked in recv/accept on it), then close()."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class Loopback(ABC):
    """A TCP listener on 127.0.0.1 serving each connection in threads named `thread_prefix-*`."""

    BACKLOG = 64

    def __init__(self, thread_prefix: str) -> None:
        self.thread_prefix = thread_prefix  # every thread it starts is named with this
        self.port = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = False

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(self.BACKLOG)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop, "accept", listener)
        return self.port

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            listener, self._listener = self._listener, None
        if listener is not None:
            # accept() blocks in another thread: shutdown() wakes it, close() alone does not.
            close_quietly(listener)
        self._close_open()
        self._join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what differs ----------------------------------------------------------------------

    @abstractmethod
    def _accepted(self, sock: socket.socket) -> None:
        """Serve one accepted connection (in the accept thread: start threads for long work)."""

    @abstractmethod
    def _close_open(self) -> None:
        """Close what is open, on stop(), after the listener: its threads then end."""

    def _other_threads(self) -> list[threading.Thread]:
        """Threads not started by _spawn that stop() joins too."""
        return []

    def _thread_name(self, what: str) -> str:
        """The name of a new thread; called with the lock held."""
        return f"{self.thread_prefix}-{what}"

    # --- internals -------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], what: str, *args: Any) -> threading.Thread:
        with self._lock:
            name = self._thread_name(what)
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()
        return thread

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _peer = listener.accept()
            except OSError:
                return  # shut down by stop()
            self._accepted(sock)

    def _join(self) -> None:
        """Join the threads, those started meanwhile too, for JOIN_TIMEOUT at the most."""
        deadline = time.monotonic() + JOIN_TIMEOUT
        while True:
            with self._lock:
                threads = [t for t in self._threads if t.is_alive()]
            threads += [t for t in self._other_threads() if t.is_alive()]
            threads = [t for t in threads if t is not threading.current_thread()]
            if not threads or time.monotonic() > deadline:
                break
            threads[0].join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
