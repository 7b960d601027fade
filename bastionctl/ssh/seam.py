"""Every private paramiko name bastionctl uses, in one place, with a check that they still fit.

The fast data path (ssh.deliver, ssh.wire, ssh.pipe, ssh.forward) reaches past paramiko's
public API: it swaps a channel's receive buffer, reopens the channel window itself and sends
that message, and a new channel's first data, from the transport's own thread. paramiko
makes no promise about these names, so:

- nothing here changes paramiko when imported; `install()` does, and only the tunnel manager
  calls it (through ssh.datapath), after `problems()` found every name as expected;
- `problems()` checks each name and its shape (a test runs it against the installed paramiko,
  and pyproject.toml pins paramiko to the versions it passed on);
- when a name is missing or changed, ssh.datapath takes the plain path instead: public API
  only (`Channel.recv`/`sendall`, like paramiko's demos/forward.py), slower but correct.

paramiko itself is imported here with Invoke hidden: paramiko.config imports it only for
`Match exec` in ssh config files, which bastionctl never has paramiko read, and Invoke (with
asyncio, yaml and unittest.mock behind it) was half of paramiko's import time on the path of
every cold tunnel. `sys.modules` is restored right after, so other code can still import it.
"""

from __future__ import annotations

import contextlib
import inspect
import socket
import sys
import threading
from collections.abc import Callable, Iterator

_ABSENT = object()


@contextlib.contextmanager
def _invoke_hidden() -> Iterator[None]:
    saved = sys.modules.get("invoke", _ABSENT)
    sys.modules["invoke"] = None  # type: ignore[assignment]  # "import invoke" fails
    try:
        yield
    finally:
        if saved is _ABSENT:
            sys.modules.pop("invoke", None)
        else:
            sys.modules["invoke"] = saved  # type: ignore[assignment]


with _invoke_hidden():
    import paramiko
    import paramiko.buffered_pipe
    import paramiko.channel
    from paramiko.common import cMSG_CHANNEL_DATA, cMSG_CHANNEL_OPEN, cMSG_CHANNEL_WINDOW_ADJUST

    from bastionctl.ssh.pipe import ChunkPipe, Redirect

# paramiko's own receive buffer, kept for every channel bastionctl does not open itself.
_BufferedPipe = paramiko.buffered_pipe.BufferedPipe
_threads = threading.local()
_installed = False


def problems() -> list[str]:
    """What of the seam no longer matches the installed paramiko; empty when all fits."""
    found: list[str] = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            found.append(what)

    pipe = getattr(paramiko.channel, "BufferedPipe", None)
    need(pipe is _BufferedPipe or pipe is _new_pipe, "channel.BufferedPipe")
    # ChunkPipe stands in for BufferedPipe: it must cover every method paramiko may call.
    pipe_methods = {name for name in vars(_BufferedPipe) if not name.startswith("_")}
    need(pipe_methods <= set(vars(ChunkPipe)), "BufferedPipe's methods")
    need(_parameters(paramiko.Channel, "_check_add_window") == ["self", "n"], "_check_add_window")
    need(_parameters(paramiko.Transport, "_send_message") == ["self", "data"], "_send_message")
    need(
        _parameters(paramiko.Transport, "_send_user_message") == ["self", "data"],
        "_send_user_message",
    )
    for name, expected in (
        ("_next_channel", ["self"]),
        ("_sanitize_window_size", ["self", "window_size"]),
        ("_sanitize_packet_size", ["self", "max_packet_size"]),
    ):
        need(_parameters(paramiko.Transport, name) == expected, f"Transport.{name}")
    need(_parameters(paramiko.Channel, "_set_transport") == ["self", "transport"], "_set_transport")
    need(
        _parameters(paramiko.Channel, "_set_window") == ["self", "window_size", "max_packet_size"],
        "Channel._set_window",
    )
    channel = paramiko.Channel(0)
    need(isinstance(getattr(channel, "in_buffer", None), _BufferedPipe), "Channel.in_buffer")
    need(isinstance(getattr(channel, "remote_chanid", None), int), "Channel.remote_chanid")
    # What send_now() does in Channel.send()'s place.
    for name in ("out_window_size", "out_max_packet_size", "eof_sent"):
        need(isinstance(getattr(channel, name, None), int), f"Channel.{name}")
    need(callable(getattr(getattr(channel, "lock", None), "acquire", None)), "Channel.lock")
    near, far = socket.socketpair()
    try:
        transport = paramiko.Transport(near)  # never started: its attributes are all we read
        lock = getattr(transport, "clear_to_send_lock", None)
        need(
            callable(getattr(lock, "acquire", None)) and callable(getattr(lock, "release", None)),
            "Transport.clear_to_send_lock",
        )
        event = getattr(transport, "clear_to_send", None)
        need(isinstance(event, threading.Event), "Transport.clear_to_send")
        timeout = getattr(transport, "auth_timeout", None)
        need(isinstance(timeout, int | float), "Transport.auth_timeout")
        # What open_started() does in open_channel()'s place.
        need(isinstance(getattr(transport, "channel_events", None), dict), "channel_events")
        need(isinstance(getattr(transport, "channels_seen", None), dict), "channels_seen")
        channels = getattr(transport, "_channels", None)
        need(callable(getattr(channels, "put", None)), "Transport._channels")
        need(callable(getattr(channels, "get", None)), "Transport._channels")
        need(callable(getattr(getattr(transport, "lock", None), "acquire", None)), "Transport.lock")
    finally:
        near.close()
        far.close()
    return found


def _parameters(cls: type, name: str) -> list[str] | None:
    function = getattr(cls, name, None)
    if not callable(function):
        return None
    return list(inspect.signature(function).parameters)


def install() -> None:
    """Channels opened inside `chunk_pipes()` buffer with ChunkPipe; every other stays as is.

    paramiko creates a channel's buffer in the thread that calls open_channel(), so a
    thread-local switch scopes the replacement to bastionctl's own channels.
    """
    global _installed
    if not _installed:
        paramiko.channel.BufferedPipe = _new_pipe  # type: ignore[attr-defined,assignment]
        _installed = True


def _new_pipe() -> object:
    return ChunkPipe() if getattr(_threads, "chunk_pipes", False) else _BufferedPipe()


@contextlib.contextmanager
def chunk_pipes() -> Iterator[None]:
    """Around open_channel(): that channel buffers with ChunkPipe (after `install()`)."""
    if not _installed:
        raise RuntimeError("ssh.seam.install() must run before chunk_pipes()")
    _threads.chunk_pipes = True
    try:
        yield
    finally:
        _threads.chunk_pipes = False


class _Answer:
    """Stands in the transport's `channel_events` for the Event open_channel() would wait on:
    paramiko calls set() (holding the transport's lock) when the server answers the open, and
    when the transport ends."""

    def __init__(
        self,
        transport: paramiko.Transport,
        channel: paramiko.Channel,
        answered: Callable[[paramiko.Channel | None, Exception | None], None],
    ) -> None:
        self._transport = transport
        self._channel: paramiko.Channel | None = channel  # the map holds channels weakly
        self._answered = answered

    def set(self) -> None:
        channel, self._channel = self._channel, None
        if channel is None:
            return
        transport = self._transport
        if transport._channels.get(channel.chanid) is channel and transport.active:  # type: ignore[attr-defined]
            self._answered(channel, None)
            return
        # Refused (paramiko left the reason where open_channel() would fetch it), or the
        # transport ended.
        failure = transport.saved_exception
        if isinstance(failure, paramiko.ChannelException):
            transport.saved_exception = None
        self._answered(None, failure)


def open_started(
    transport: paramiko.Transport,
    destination: tuple[str, int],
    origin: tuple[str, int],
    window_size: int,
    max_packet_size: int,
    answered: Callable[[paramiko.Channel | None, Exception | None], None],
) -> None:
    """Send a `direct-tcpip` open and return at once: what Transport.open_channel() does up to
    its wait. `answered(channel, None)` or `answered(None, exception or None)` runs in the
    transport's thread, holding its lock: it must only hand the rest on. There is no timeout
    here: the caller gives up on an open itself.
    """
    message = paramiko.Message()
    with transport.lock:
        window_size = transport._sanitize_window_size(window_size)  # type: ignore[attr-defined]
        max_packet_size = transport._sanitize_packet_size(max_packet_size)  # type: ignore[attr-defined]
        chanid = transport._next_channel()  # type: ignore[attr-defined]
        message.add_byte(cMSG_CHANNEL_OPEN)
        message.add_string("direct-tcpip")
        message.add_int(chanid)
        message.add_int(window_size)
        message.add_int(max_packet_size)
        message.add_string(destination[0])
        message.add_int(destination[1])
        message.add_string(origin[0])
        message.add_int(origin[1])
        with chunk_pipes():
            channel = paramiko.Channel(chanid)
        transport._channels.put(chanid, channel)  # type: ignore[attr-defined]
        transport.channel_events[chanid] = _Answer(transport, channel, answered)  # type: ignore[assignment]
        transport.channels_seen[chanid] = True
        channel._set_transport(transport)  # type: ignore[attr-defined]
        channel._set_window(window_size, max_packet_size)  # type: ignore[attr-defined]
    transport._send_user_message(message)  # type: ignore[attr-defined]


def redirect(channel: paramiko.Channel, target: Redirect) -> None:
    """Hand the channel's received data (what it holds first) and its EOF to `target`."""
    buffer = channel.in_buffer
    if not isinstance(buffer, ChunkPipe):
        raise TypeError("the channel was not opened inside ssh.seam.chunk_pipes()")
    buffer.redirect(target)


def consumed(channel: paramiko.Channel, count: int) -> int:
    """`count` received bytes were taken: the window to reopen now (0: not yet worth it)."""
    ack: int = channel._check_add_window(count)  # type: ignore[attr-defined]
    return ack


def reopen_now(channel: paramiko.Channel, ack: int) -> bool:
    """Send a window adjustment from the transport's own thread, if that cannot block.

    The transport thread must not wait for a key exchange, which only it can finish, nor for
    a sender holding the transport: then the caller queues it for `reopen()` instead.
    """
    transport = channel.transport
    if transport is None:
        return True
    if not _send_lock_now(transport):
        return False
    try:
        transport._send_message(_adjustment(channel, ack))  # type: ignore[attr-defined]
        return True
    finally:
        transport.clear_to_send_lock.release()


def _send_lock_now(transport: paramiko.Transport) -> bool:
    """Take the transport's send lock if that needs no wait and no key exchange is under way
    (only the transport's thread can finish one): True when taken, for the caller to release."""
    lock = transport.clear_to_send_lock
    if not lock.acquire(blocking=False):
        return False
    if transport.clear_to_send.is_set():
        return True
    lock.release()
    return False


def send_now(channel: paramiko.Channel, take: Callable[[int], bytes]) -> int | None:
    """Send `take(limit)` as the channel's data from the transport's own thread, if that
    cannot block: None when it could (a key exchange, another sender, no window), and then
    `take` was not called; else the count sent (0: `take` had nothing).

    What Channel.send() does, without its waits: those could wait for this very thread.
    """
    transport = channel.transport
    if transport is None or not _send_lock_now(transport):
        return None
    try:
        if not channel.lock.acquire(blocking=False):
            return None
        try:
            if channel.closed or channel.eof_sent:
                return None
            limit = min(channel.out_window_size, channel.out_max_packet_size - 64)
            if limit <= 0:
                return None
            data = take(limit)
            if not data:
                return 0
            channel.out_window_size -= len(data)
        finally:
            channel.lock.release()
        message = paramiko.Message()
        message.add_byte(cMSG_CHANNEL_DATA)
        message.add_int(channel.remote_chanid)
        message.add_string(data)
        transport._send_message(message)  # type: ignore[attr-defined]
        return len(data)
    finally:
        transport.clear_to_send_lock.release()


def reopen(channel: paramiko.Channel, ack: int) -> None:
    """Send a window adjustment from any thread but the transport's (may wait for a rekey)."""
    transport = channel.transport
    if transport is not None:
        transport._send_user_message(_adjustment(channel, ack))  # type: ignore[attr-defined]


def _adjustment(channel: paramiko.Channel, ack: int) -> paramiko.Message:
    message = paramiko.Message()
    message.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
    message.add_int(channel.remote_chanid)
    message.add_int(ack)
    return message


class WatchedLock:
    """A transport's `clear_to_send_lock` that tells whether a sender waits for it.

    Every user message of a transport (a channel's data, open, EOF, close) is sent holding
    this lock; a thread that finds it taken is one more sender queued behind the holder.
    """

    __slots__ = ("_lock", "_waiting")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[None] = []  # one entry per waiting thread (append/pop are atomic)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(False):
            return True
        if not blocking:
            return False
        self._waiting.append(None)
        try:
            return self._lock.acquire(True, timeout)
        finally:
            self._waiting.pop()

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def contended(self) -> bool:
        return bool(self._waiting)


def watch_senders(transport: paramiko.Transport) -> Callable[[], bool]:
    """Whether another thread waits to send on `transport`. Call before the transport starts."""
    lock = WatchedLock()
    transport.clear_to_send_lock = lock  # type: ignore[assignment]
    return lock.contended


def set_auth_timeout(transport: paramiko.Transport, seconds: float) -> None:
    """How long a login may take; paramiko's 30 s default is short for a person typing."""
    if hasattr(transport, "auth_timeout"):
        transport.auth_timeout = seconds
