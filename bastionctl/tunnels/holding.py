"""What a command holding a tunnel in its terminal does, wherever the tunnel lives (in the
agent, attached, or in this process): the signals that end it, the ready banner, the client it
launched. No paramiko here: an attached foreground tunnel's command never loads it.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from bastionctl.errors import ConnectError, ExitStatus
from bastionctl.model import TunnelSpec, hostport
from bastionctl.system.terminal import hangup_signal
from bastionctl.tunnels.launch import (
    Line,
    handoff_message,
    start_client,
    write_requested_rdp_file,
    wsl_note,
)
from bastionctl.tunnels.protocol import TunnelState

STAYS_UP = "the tunnel stays up until Ctrl-C"


class Interrupted(Exception):
    """SIGTERM or SIGINT while logging in: the login is abandoned ("interrupted", 130)."""


class Signals:
    """SIGTERM, SIGINT and the terminal's hang-up end the tunnel. Once it is up the handler
    only sets `ended` (the wait loop sees it): an exception raised at an arbitrary point of the
    main thread could land in a log call, the banner or the clean-up. While the login blocks
    the main thread (a prompt, a handshake), raising is the only way to stop it."""

    def __init__(self) -> None:
        self.ended = threading.Event()
        self.signum: int | None = None
        self.logging_in = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Signals:
        hangup = hangup_signal()
        for signum in (signal.SIGTERM, signal.SIGINT, *([hangup] if hangup else [])):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.ended.is_set():
            return  # closing already
        self.signum = signum
        self.ended.set()
        if self.logging_in:
            raise Interrupted

    @property
    def hung_up(self) -> bool:
        """The terminal went away: nobody reads what would be printed."""
        return self.signum is not None and self.signum == hangup_signal()

    @property
    def status(self) -> int:
        """Exit status of a tunnel the person ended: 0 for SIGTERM, 130 for Ctrl-C, 129 for
        a hang-up."""
        if self.signum == signal.SIGINT:
            return ExitStatus.INTERRUPTED
        return 128 + self.signum if self.hung_up and self.signum else ExitStatus.OK


def check_rdp_certificate(spec: TunnelSpec, port: int, err: Line) -> str | None:
    """For an RDP tunnel to an instance whose certificate thumbprint EC2 attests: compare it
    with the certificate seen through the tunnel. The line for the banner when it matches;
    a warning said (None) when no certificate could be seen; CertificateMismatch (the tunnel
    closes, main() says it) when it is another."""
    if spec.service is None or spec.service.name != "rdp":
        return None
    from bastionctl.rdp.check import check_local_port

    result = check_local_port(spec.host, spec.connection_host(), port)
    if result is None:
        return None
    line, warning = result
    if warning:
        err(f"bastionctl: warning: {line}")
        return None
    return line


def listen_addresses(bind: str) -> list[str]:
    """The addresses a tunnel on `bind` listens on (as LocalForwarder.addresses)."""
    return ["127.0.0.1", "::1"] if bind == "localhost" else [bind]


def hold(
    spec: TunnelSpec,
    port: int,
    addresses: Sequence[str],
    out: Line,
    err: Line,
    ended: threading.Event,
    alive: Callable[[], bool],
    wait: Callable[[], object],
    launch_client: bool,
    rdp_file: Path | None,
    client_args: Sequence[str],
) -> int | None:
    """Say where the tunnel is and wait: the launched client's status, or None when it ended
    (failed, stopped, or `ended` by a signal). `alive` says whether the tunnel still is;
    `wait` waits a moment (0.2 s at most) for news.

    A launcher that hands the client to the OS and returns at once (macOS `open`) does not end
    the tunnel: it stays up until Ctrl-C or `tunnel stop`.
    """
    checked = check_rdp_certificate(spec, port, err)
    # Written before the banner: whoever waits for "connect with" finds the file.
    write_requested_rdp_file(spec, port, rdp_file, err)
    out(f"Tunnel open: {spec.label} via {spec.bastion.alias}")
    listening = " and ".join(hostport(a, port) for a in addresses)
    remote = hostport(spec.remote_host, spec.remote_port)
    out(f"  listening on {listening} -> {remote} on {spec.host.alias}")
    out(f"  connect with: {spec.connection_string(port)}")
    if checked is not None:
        out(f"  {checked}")
    note = wsl_note(spec.bind, port)
    if note is not None:
        out(f"  {note}")
    out("Press Ctrl-C to close.")
    sys.stdout.flush()
    client = start_client(spec, port, client_args, err, rdp_file) if launch_client else None
    while not ended.is_set() and alive():
        status = client.process.poll() if client is not None else None
        if client is not None and status is not None:
            if client.command.hands_off:
                # The launcher's end, not the client's: the tunnel stays for the client.
                err(f"bastionctl: {handoff_message(client, status)}; {STAYS_UP}")
                client = None
                continue
            # The client was the point of this tunnel: its end is ours.
            out(f"Client exited with status {status}; tunnel closed.")
            return status
        wait()
    return None


def ended(
    spec: TunnelSpec, state: TunnelState | None, reason: str | None, signals: Signals, out: Line
) -> int:
    """After hold() returned no client's status: say how the tunnel ended, its exit status.
    A failed tunnel raises ConnectError (main() says it, once)."""
    if state is TunnelState.FAILED:
        raise ConnectError(f"tunnel {spec.label} failed: {reason}")
    if state is TunnelState.CLOSED:
        out("Tunnel stopped by `bastionctl tunnel stop`.")
        return 0
    if not signals.hung_up:
        out("Tunnel closed.")
    return signals.status
