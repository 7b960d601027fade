"""One tunnel: local port -> bastion (key + TOTP) -> target sshd (key) -> service port."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import paramiko

from bastionctl.model import TunnelSpec
from bastionctl.ssh.connect import (
    MAX_PACKET_SIZE,
    WINDOW_SIZE,
    Session,
    connect_bastion,
    connect_through,
)
from bastionctl.ssh.forward import EventSink, LocalForwarder

log = logging.getLogger(__name__)


class Tunnel:
    """Bind first (a taken port must not cost a TOTP code), then log in, then forward."""

    def __init__(self, spec: TunnelSpec, session: Session, on_event: EventSink | None = None):
        self.spec = spec
        self.session = session
        self.on_event = on_event or (lambda _kind, _message: None)
        self.forwarder = LocalForwarder(spec.bind, spec.local_port, self._open_channel, on_event)
        self.bastion_transport: paramiko.Transport | None = None
        self.host_transport: paramiko.Transport | None = None
        self._closed = threading.Event()

    @property
    def local_port(self) -> int:
        return self.forwarder.port

    def open(self) -> None:
        try:
            self.forwarder.listen()
            self.bastion_transport = connect_bastion(self.spec.bastion, self.session)
            self.host_transport = connect_through(
                self.bastion_transport, self.spec.bastion, self.spec.host, self.session
            )
            self.forwarder.start()
        except BaseException:
            self.close()
            raise
        self.on_event("up", f"{self.spec.label} on {self.spec.bind}:{self.local_port}")

    def _open_channel(self, origin: tuple[str, int]) -> paramiko.Channel:
        transport = self.host_transport
        if transport is None or not transport.is_active():
            raise ConnectionError(f"the SSH connection to {self.spec.host.alias} is down")
        try:
            return transport.open_channel(
                "direct-tcpip",
                (self.spec.remote_host, self.spec.remote_port),
                origin,
                window_size=WINDOW_SIZE,
                max_packet_size=MAX_PACKET_SIZE,
                timeout=self.session.settings.connect_timeout,
            )
        except paramiko.ChannelException as exc:
            raise ConnectionError(
                f"{self.spec.host.alias} could not connect to "
                f"{self.spec.remote_host}:{self.spec.remote_port} ({exc.text}); "
                "is the service running there?"
            ) from None

    def wait(self, poll: float = 1.0) -> str | None:
        """Block until close() or until a transport dies; returns why it ended, if it died."""
        while not self._closed.wait(poll):
            for name, transport in (
                (f"bastion {self.spec.bastion.alias}", self.bastion_transport),
                (self.spec.host.alias, self.host_transport),
            ):
                if transport is None or not transport.is_active():
                    return f"the SSH connection to {name} was lost"
        return None

    def close(self) -> None:
        self._closed.set()
        self.forwarder.close()
        for transport in (self.host_transport, self.bastion_transport):
            if transport is not None:
                transport.close()
        self.on_event("closed", self.spec.label)

    def __enter__(self) -> Tunnel:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
