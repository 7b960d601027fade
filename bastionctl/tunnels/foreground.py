"""A tunnel in the foreground of a terminal: up until Ctrl-C, SIGTERM, `tunnel stop` or the end of
the client it launched (not of a launcher that hands the client to the OS and returns at once,
like macOS `open`).

The process serves its control socket meanwhile, so `tunnel list` and `tunnel stop` in other
terminals see its tunnel.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from bastionctl.config import Settings
from bastionctl.errors import ConnectError
from bastionctl.model import TunnelSpec, hostport
from bastionctl.otp import SecretStore, UsedSteps
from bastionctl.ssh.connect import Session
from bastionctl.system.cpu import CpuKeeper
from bastionctl.tunnels import control
from bastionctl.tunnels.launch import (
    Line,
    handoff_message,
    start_client,
    write_requested_rdp_file,
    wsl_note,
)
from bastionctl.tunnels.manager import ManagedTunnel, TunnelManager
from bastionctl.tunnels.protocol import TunnelEvent, TunnelState
from bastionctl.tunnels.service import TunnelService

Ask = Callable[[str, bool], str]

STAYS_UP = "the tunnel stays up until Ctrl-C"


class _Terminated(Exception):
    pass


def _raise_terminated(_signum: int, _frame: FrameType | None) -> None:
    raise _Terminated


def run_foreground(
    spec: TunnelSpec,
    settings: Settings,
    ask: Ask,
    out: Line,
    err: Line,
    *,
    launch_client: bool = False,
    rdp_file: Path | None = None,
    client_args: Sequence[str] = (),
) -> int:
    """Hold `spec` open until the person ends it; the exit status (the launched client's, if
    its end was the tunnel's).

    A tunnel that fails raises ConnectError with the reason.
    """
    reconnected = False

    def on_event(event: TunnelEvent) -> None:
        # The first "up" is the ready banner on stdout; later ones are recoveries.
        noisy = (
            TunnelState.CONNECTING,
            TunnelState.RECONNECTING,
            TunnelState.NEEDS_INPUT,
            TunnelState.FAILED,
        )
        if event.state in noisy or (event.state is TunnelState.UP and reconnected):
            err(f"bastionctl: {event.message}")

    session = Session(
        settings=settings,
        ask=ask,
        notify=lambda message: err(f"bastionctl: {message}"),
        secrets=SecretStore(),
        used_steps=UsedSteps(),
    )
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    manager = TunnelManager(on_event, process="foreground")
    keeper = CpuKeeper()
    keeper.start()  # clients it launches start unpinned (launch.launch)
    server = control.ControlServer(
        control.process_socket(manager.pid), TunnelService(manager).handle
    )
    try:
        server.start()
        active = manager.open(spec, session)
        reconnected = True
        try:
            status = _hold(active, spec, out, err, launch_client, rdp_file, client_args)
        except (KeyboardInterrupt, _Terminated):
            status = None
        if status is not None:
            return status
        if active.state is TunnelState.FAILED:
            raise ConnectError(f"tunnel {spec.label} failed: {active.last_error}")
        if active.state is TunnelState.CLOSED:
            out("Tunnel stopped by `bastionctl tunnel stop`.")
        else:
            out("Tunnel closed.")
        return 0
    except _Terminated:
        raise KeyboardInterrupt from None
    finally:
        manager.close_all()
        server.close()
        keeper.stop()
        signal.signal(signal.SIGTERM, previous)


def _hold(
    active: ManagedTunnel,
    spec: TunnelSpec,
    out: Line,
    err: Line,
    launch_client: bool,
    rdp_file: Path | None,
    client_args: Sequence[str],
) -> int | None:
    """Say where the tunnel is and wait: the launched client's status, or None when it ended.

    A launcher that hands the client to the OS and returns at once (macOS `open`) does not end
    the tunnel: it stays up until Ctrl-C or `tunnel stop`.
    """
    port = active.local_port
    # Written before the banner: whoever waits for "connect with" finds the file.
    write_requested_rdp_file(spec, port, rdp_file, err)
    out(f"Tunnel open: {spec.label} via {spec.bastion.alias}")
    listening = " and ".join(hostport(a, port) for a in active.forwarder.addresses())
    remote = hostport(spec.remote_host, spec.remote_port)
    out(f"  listening on {listening} -> {remote} on {spec.host.alias}")
    out(f"  connect with: {spec.connection_string(port)}")
    note = wsl_note(spec.bind, port)
    if note is not None:
        out(f"  {note}")
    out("Press Ctrl-C to close.")
    sys.stdout.flush()
    client = start_client(spec, port, client_args, err, rdp_file) if launch_client else None
    while active.state not in (TunnelState.FAILED, TunnelState.CLOSED):
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
        time.sleep(0.2)
    return None
