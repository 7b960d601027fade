"""A foreground tunnel: the agent's tunnel, attached to this terminal, so every tunnel of the
user through a bastion shares one login.

The command asks the agent (started if need be) to open the tunnel and keeps that control
connection open while it holds the tunnel: what the tunnel's logins ask is asked here, its news
is printed here, and the connection's end closes the tunnel, whether the command ends on
purpose (Ctrl-C, SIGTERM, the terminal's hang-up, the launched client's end) or dies. The
tunnel lives and dies with the command; only the authenticated connection outlives it, for
the `persist` setting. No paramiko in this process: the agent has it.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from bastionctl import sanitise
from bastionctl.errors import BastionctlError, ConnectError, LoginCancelled, ProtocolError
from bastionctl.model import TunnelSpec
from bastionctl.prompting import Question
from bastionctl.tunnels import control
from bastionctl.tunnels.agent import ensure_agent
from bastionctl.tunnels.holding import Interrupted, Signals, ended, hold, listen_addresses
from bastionctl.tunnels.launch import Line
from bastionctl.tunnels.protocol import (
    Answer,
    AttachTunnel,
    Message,
    News,
    Notice,
    Opened,
    Prompt,
    TunnelInfo,
    TunnelRequest,
    TunnelState,
    expect,
)

Ask = Callable[[str, bool], str]

# Asking again once when the agent hangs up before it says anything: it may have been leaving
# (idle) just as this command found it.
ATTACH_TRIES = 2
# How long the end of the command waits for the agent to have closed the tunnel.
CLOSE_WAIT = 5.0


class AgentUnavailable(BastionctlError):
    """The agent could not be used (it did not start, cannot be reached, speaks another
    version) and nothing was asked of it: the tunnel may log in by itself instead."""


def run_attached(
    request: TunnelRequest,
    spec: TunnelSpec,
    ask: Ask,
    out: Line,
    err: Line,
    *,
    launch_client: bool = False,
    rdp_file: Path | None = None,
    client_args: Sequence[str] = (),
) -> int:
    """Hold `request` (`spec`, as built here) open in the agent until the person ends it; the
    exit status (the launched client's, if its end was the tunnel's).

    AgentUnavailable when the agent cannot be used; a tunnel that fails raises ConnectError.
    """
    try:
        path = ensure_agent()
    except BastionctlError as exc:
        raise AgentUnavailable(exc.message, exc.hint) from None
    with Signals() as signals:
        attached = _Attached(path, AttachTunnel(request, os.getpid()), ask, err, signals)
        try:
            try:
                signals.logging_in = True
                if signals.ended.is_set():
                    raise Interrupted
                info = attached.open()
                signals.logging_in = False
                status = hold(
                    spec,
                    info.local_port,
                    listen_addresses(spec.bind),
                    out,
                    err,
                    signals.ended,
                    attached.alive,
                    attached.wait,
                    launch_client,
                    rdp_file,
                    client_args,
                )
                if status is not None:
                    return status
                if attached.lost and attached.end not in (TunnelState.FAILED, TunnelState.CLOSED):
                    raise ConnectError(
                        f"lost the bastionctl agent; tunnel {spec.label} closed with it"
                    )
                return ended(spec, attached.end, attached.reason, signals, out)
            finally:
                signals.ended.set()  # a signal from now on changes nothing
                signals.logging_in = False
                attached.close()
        except Interrupted:
            # (also one that lands in the clean-up above before it marks the end)
            raise KeyboardInterrupt from None


class _Attached:
    """This command's end of the attachment."""

    def __init__(
        self, path: Path, request: AttachTunnel, ask: Ask, err: Line, signals: Signals
    ) -> None:
        self._path = path
        self._request = request
        self._ask = ask
        self._err = err
        self._signals = signals
        self._conn: control.Connection | None = None
        self._up = False
        self._news: queue.Queue[Message | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        # How the tunnel ended in the agent (CLOSED: `tunnel stop`; FAILED, with `reason`).
        self.end: TunnelState | None = None
        self.reason = ""
        self.lost = False  # the agent went away
        # Why a question of the login could not be asked here (no terminal), if one could not.
        self._unasked: BastionctlError | None = None

    def open(self) -> TunnelInfo:
        """The conversation up to the agent's Opened: its prompts answered, its news said."""
        for attempt in range(1, ATTACH_TRIES + 1):
            heard = False
            try:
                conn = self._conn = self._connect(again=attempt > 1)
                while True:
                    message = conn.receive()
                    if isinstance(message, Prompt | Notice | News):
                        heard = True
                        self._take(message)
                        continue
                    if message is None and not heard and attempt < ATTACH_TRIES:
                        conn.close()
                        break  # the agent was leaving: ask again (a new one starts)
                    try:
                        info = expect(message, Opened, "the bastionctl agent").tunnel
                    except LoginCancelled:
                        # The login ended for want of an answer: why there was none is ours.
                        if self._unasked is not None:
                            raise self._unasked from None
                        raise
                    self._up = True
                    self._reader = threading.Thread(target=self._read, name="attached", daemon=True)
                    self._reader.start()
                    return info
            except ProtocolError as exc:
                if heard:
                    raise
                # (an agent of another version, say, that knows no attach request)
                raise AgentUnavailable(f"the bastionctl agent cannot be used: {exc}") from None
            except OSError as exc:
                why = exc.strerror or exc
                if heard:
                    raise ConnectError(f"lost the bastionctl agent: {why}") from None
                raise AgentUnavailable(f"cannot reach the bastionctl agent: {why}") from None
        raise AgentUnavailable("the bastionctl agent hung up without an answer")

    def _connect(self, again: bool) -> control.Connection:
        try:
            path = ensure_agent() if again else self._path
            conn = control.connect(path, timeout=None)
        except BastionctlError as exc:
            raise AgentUnavailable(exc.message, exc.hint) from None
        conn.send(self._request)
        return conn

    def _take(self, message: Message | None) -> None:
        if isinstance(message, Prompt):
            self._answer(message)
        elif isinstance(message, Notice):
            self._err(f"bastionctl: {message.text}")
        elif isinstance(message, News):
            self._hear(message)

    def _answer(self, prompt: Prompt) -> None:
        if self._unasked is not None:
            return  # nobody here to ask; the agent knows (see below)
        # From another process: sanitised again; a server's question says who asks.
        origin = prompt.origin.clean() if prompt.origin else None
        question = Question(origin) if origin else sanitise.prompt(prompt.text)
        logging_in, self._signals.logging_in = self._signals.logging_in, True
        answer: str | None
        try:
            answer = self._ask(question, prompt.echo)
        except LoginCancelled:
            answer = None  # the agent ends the login and says so
        except BastionctlError as exc:
            if not self._up:
                # Nobody here can answer (no terminal): the agent's login hears so when this
                # side stops sending, and ends as it does without a front end (an unknown host
                # key is refused with its fingerprint); its reply still comes.
                self._unasked = exc
                assert self._conn is not None
                self._conn.finish()
                return
            self._err(f"bastionctl: {exc}")  # the tunnel waits for `tunnel answer`
            answer = None
        finally:
            self._signals.logging_in = logging_in
        assert self._conn is not None
        if self._unasked is None:
            self._conn.send(Answer(answer))

    def _hear(self, news: News) -> None:
        if news.failure:  # a client the tunnel could not serve (rate-limited by the agent)
            self._err(f"bastionctl: {news.message}")
            return
        if news.state in (TunnelState.CLOSED, TunnelState.FAILED):
            # "failed" is not said here: the error raised says it, once.
            if self.end is None:
                self.end, self.reason = news.state, news.message
            return
        # The first "up" is the ready banner on stdout; later ones are recoveries.
        noisy = (TunnelState.CONNECTING, TunnelState.RECONNECTING, TunnelState.NEEDS_INPUT)
        if news.state in noisy or (news.state is TunnelState.UP and self._up):
            self._err(f"bastionctl: {news.message}")

    def _read(self) -> None:
        """(A thread, once the tunnel is up.) What the agent says, for the main thread."""
        assert self._conn is not None
        while True:
            try:
                message = self._conn.receive()
            except (OSError, BastionctlError):
                message = None
            self._news.put(message)
            if message is None:
                return

    def alive(self) -> bool:
        return self.end is None and not self.lost

    def wait(self) -> None:
        """What the agent said meanwhile, taken in this (the main) thread; 0.2 s at most."""
        try:
            message = self._news.get(timeout=0.2)
        except queue.Empty:
            return
        while True:
            if message is None:
                self.lost = self.end is None
                return
            self._take(message)
            try:
                message = self._news.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        """End the attachment: the agent closes the tunnel, then the connection."""
        conn = self._conn
        if conn is None:
            return
        conn.finish()
        if self._reader is not None:
            self._reader.join(CLOSE_WAIT)
        conn.close()
