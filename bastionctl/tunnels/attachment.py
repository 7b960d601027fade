"""The agent's side of a tunnel attached to a terminal: its control connection is its life.

The command that asked (`bastionctl tunnel ...` in the foreground) keeps the connection open
while it holds the tunnel. The agent sends it the tunnel's News and asks it what the tunnel's
logins ask, now and on later reconnects; the tunnel closes when the connection does, whether
the command ended on purpose or died.
"""

from __future__ import annotations

import logging
import queue
import threading

from bastionctl.errors import BastionctlError, NeedsInput
from bastionctl.tunnels.control import Connection
from bastionctl.tunnels.protocol import (
    Answer,
    Message,
    News,
    Notice,
    TunnelEvent,
    answer_text,
    prompt_for,
)

log = logging.getLogger(__name__)


class Attachment:
    """The terminal behind one attach request, asked and told things until it leaves."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._sending = threading.Lock()  # whole messages from several threads
        self._asking = threading.Lock()  # one question at a time
        # Once the tunnel is open, `hold()` reads the connection and hands answers over here.
        self._answers: queue.Queue[Answer | None] = queue.Queue()
        self._relayed = False
        self._gone = threading.Event()

    def send(self, message: Message) -> bool:
        """Whether `message` went out (the terminal may have left)."""
        with self._sending:
            if self._gone.is_set():
                return False
            try:
                self._conn.send(message)
            except OSError:
                self._gone.set()
                return False
            return True

    def ask(self, prompt: str, echo: bool) -> str:
        question = prompt_for(prompt, echo)
        with self._asking:
            while not self._answers.empty():
                self._answers.get_nowait()  # an answer nobody asked for
            if not self.send(question):
                raise NeedsInput(question.text)
            reply: Message | None
            if self._relayed:
                reply = self._answers.get()
            else:
                try:
                    reply = self._conn.receive()
                except (OSError, BastionctlError):
                    reply = None
            if not isinstance(reply, Answer):
                self._gone.set()
            return answer_text(reply, question)

    def notify(self, text: str) -> None:
        log.info("%s", text)
        self.send(Notice(text))

    def hear(self, event: TunnelEvent) -> None:
        """The tunnel's event, for the terminal (a manager listener)."""
        self.send(News(event.state, event.message, event.failure))

    def hold(self) -> None:
        """Read the connection until the terminal leaves: it closed its end, died, or said
        anything but an answer. Called once the tunnel is open."""
        with self._asking:
            self._relayed = True
        while True:
            try:
                message = self._conn.receive()
            except (OSError, BastionctlError):
                message = None
            if not isinstance(message, Answer):
                break
            self._answers.put(message)
        self._gone.set()
        self._answers.put(None)  # a question under way gets no answer
