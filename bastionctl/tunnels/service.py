"""A process's tunnels served on its control socket: list and stop everywhere, open in the agent.

Each request gets its own session: the prompts of a login made for it go back over that
request's connection, to the front end that asked, and nowhere else. Once the request has been
answered that front end is gone for the tunnel; a later prompt (a reconnect without a stored
TOTP secret) leaves the tunnel in needs-input until a front end answers it (AnswerTunnel).
An attached tunnel (a foreground command's) keeps its front end until the connection closes,
and closes with it (tunnels.attachment).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from pathlib import Path

from bastionctl.config import Settings
from bastionctl.errors import BastionctlError, NeedsInput, UsageError
from bastionctl.model import TunnelSpec
from bastionctl.otp import SecretStore, UsedSteps
from bastionctl.ssh.connect import Session
from bastionctl.tunnels.attachment import Attachment
from bastionctl.tunnels.control import Connection
from bastionctl.tunnels.manager import TunnelManager
from bastionctl.tunnels.protocol import (
    Answer,
    AttachTunnel,
    Listed,
    ListTunnels,
    LoggedOut,
    LoginInfo,
    Logout,
    Message,
    Notice,
    Opened,
    OpenTunnel,
    Reply,
    Request,
    Stopped,
    StopTunnels,
    TunnelId,
    TunnelInfo,
    TunnelRequest,
    answer_text,
    prompt_for,
)

log = logging.getLogger(__name__)


class FrontEnd:
    """The front end behind one request: it is asked and told things until it leaves."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        # One question at a time on the connection; leave() waits for the one under way.
        self._lock = threading.Lock()
        self._gone = False

    def ask(self, prompt: str, echo: bool) -> str:
        question = prompt_for(prompt, echo)
        with self._lock:
            if self._gone:
                raise NeedsInput(question.text)
            reply: Message | None
            try:
                self._conn.send(question)
                reply = self._conn.receive()
            except (OSError, BastionctlError):
                reply = None
            if not isinstance(reply, Answer):
                self._gone = True
            return answer_text(reply, question)

    def notify(self, text: str) -> None:
        log.info("%s", text)
        with self._lock:
            if self._gone:
                return
            try:
                self._conn.send(Notice(text))
            except OSError:
                self._gone = True

    def leave(self) -> None:
        """The request is answered: nothing more goes to this front end."""
        with self._lock:
            self._gone = True


class TunnelService:
    """Answers the control requests for one process's TunnelManager.

    Every process lists and stops its tunnels; only the agent (`can_open`) opens tunnels for
    other processes and takes answers for its waiting ones.
    """

    def __init__(
        self,
        manager: TunnelManager,
        *,
        can_open: bool = False,
        secrets: SecretStore | None = None,
        used_steps: UsedSteps | None = None,
    ) -> None:
        self.manager = manager
        self.can_open = can_open
        self.secrets = secrets if secrets is not None else SecretStore()
        self.used_steps = used_steps or UsedSteps()
        self.last_activity = time.monotonic()
        self.busy = 0
        self._busy_lock = threading.Lock()
        # Attached tunnels: id -> the pid of the command that holds each.
        self._attached: dict[TunnelId, int] = {}

    def handle(self, request: Request, conn: Connection) -> Reply | None:
        self.last_activity = time.monotonic()
        if isinstance(request, ListTunnels):
            infos = tuple(self._info(tunnel.info()) for tunnel in self.manager.list())
            return Listed(self.manager.pid, self.manager.process, infos, self._logins())
        if isinstance(request, StopTunnels):
            wanted = [self.manager.get(request.tunnel)] if request.tunnel else self.manager.list()
            for tunnel in wanted:
                self.manager.close(tunnel.id)
            return Stopped(tuple(tunnel.id for tunnel in wanted))
        if isinstance(request, Logout):
            closed = self.manager.expire_idle(request.bastion, now=True)
            used = self.manager.used_logins()
            in_use = sorted(b for b in used if request.bastion in (None, b))
            return LoggedOut(closed, tuple(in_use))
        if not self.can_open:
            raise UsageError(
                f"this bastionctl process ({self.manager.process}) opens no tunnels for others"
            )
        with self._busy_lock:
            self.busy += 1
        front = FrontEnd(conn)
        try:
            if isinstance(request, AttachTunnel):
                front.leave()
                self._attach(request, conn)
                return None  # the conversation is over
            if isinstance(request, OpenTunnel):
                return self._open(request.request, front)
            tunnel = self.manager.get(request.tunnel)
            tunnel.answer(dataclasses.replace(tunnel.session, ask=front.ask, notify=front.notify))
            return Opened(tunnel.info())
        finally:
            front.leave()
            with self._busy_lock:
                self.busy -= 1
            self.last_activity = time.monotonic()

    def _info(self, info: TunnelInfo) -> TunnelInfo:
        attached = self._attached.get(info.id)
        return info if attached is None else dataclasses.replace(info, attached=attached)

    def _logins(self) -> tuple[LoginInfo, ...]:
        """The bastion logins held: used ones, then idle ones with when they close."""
        now, wall = time.monotonic(), time.time()
        used = self.manager.used_logins()
        logins = [LoginInfo(alias, count) for alias, count in sorted(used.items())]
        for alias, closes in sorted(self.manager.idle_logins().items()):
            logins.append(LoginInfo(alias, 0, round(wall + max(0.0, closes - now), 1)))
        return tuple(logins)

    def _spec(self, request: TunnelRequest) -> tuple[TunnelSpec, Settings]:
        from bastionctl.config import load_config
        from bastionctl.inventory.load import load_inventory
        from bastionctl.tunnels.spec import build_spec

        config_path = Path(request.config) if request.config else None
        config = load_inventory(load_config(config_path)).config
        return build_spec(config, request), config.settings

    def _open(self, request: TunnelRequest, front: FrontEnd) -> Opened:
        spec, settings = self._spec(request)
        tunnel = self.manager.open(spec, self.session(settings, front))
        return Opened(tunnel.info())

    def _attach(self, request: AttachTunnel, conn: Connection) -> None:
        """Open a tunnel for the command `request.pid` and hold it while its connection is
        open; its end (a half-close, or the command's death) closes the tunnel."""
        attachment = Attachment(conn)
        spec, settings = self._spec(request.request)
        session = Session(
            settings=settings,
            ask=attachment.ask,
            notify=attachment.notify,
            secrets=self.secrets,
            used_steps=self.used_steps,
        )
        tunnel = self.manager.open(spec, session, listener=attachment.hear)
        self._attached[tunnel.id] = request.pid
        try:
            attachment.send(Opened(self._info(tunnel.info())))
            attachment.hold()
        finally:
            self._attached.pop(tunnel.id, None)
            with contextlib.suppress(UsageError):  # stopped meanwhile (`tunnel stop`)
                self.manager.close(tunnel.id)

    def session(self, settings: Settings, front: FrontEnd) -> Session:
        """A login context whose prompts reach `front` only; secrets are the process's."""
        return Session(
            settings=settings,
            ask=front.ask,
            notify=front.notify,
            secrets=self.secrets,
            used_steps=self.used_steps,
        )
