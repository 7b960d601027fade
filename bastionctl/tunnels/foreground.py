"""A tunnel in the foreground of a terminal that logs in by itself (`--standalone`, or no
agent to share a login with; tunnels.attached is the usual way): up until Ctrl-C, SIGTERM,
`tunnel stop` or the end of the client it launched (not of a launcher that hands the client to
the OS and returns at once, like macOS `open`).

The process serves its control socket meanwhile, so `tunnel list` and `tunnel stop` in other
terminals see its tunnel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from bastionctl.config import Settings
from bastionctl.model import TunnelSpec
from bastionctl.otp import SecretStore, UsedSteps
from bastionctl.ssh.connect import Session
from bastionctl.system.cpu import CpuKeeper
from bastionctl.tunnels import control
from bastionctl.tunnels.holding import Interrupted, Signals, ended, hold
from bastionctl.tunnels.launch import Line
from bastionctl.tunnels.manager import TunnelManager
from bastionctl.tunnels.protocol import TunnelEvent, TunnelState
from bastionctl.tunnels.service import TunnelService

Ask = Callable[[str, bool], str]


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
        if event.failure:  # a client the tunnel could not serve (rate-limited by the manager)
            err(f"bastionctl: {event.message}")
            return
        # The first "up" is the ready banner on stdout; later ones are recoveries. "failed"
        # is not said here: the error raised below says it, once.
        noisy = (TunnelState.CONNECTING, TunnelState.RECONNECTING, TunnelState.NEEDS_INPUT)
        if event.state in noisy or (event.state is TunnelState.UP and reconnected):
            err(f"bastionctl: {event.message}")

    session = Session(
        settings=settings,
        ask=ask,
        notify=lambda message: err(f"bastionctl: {message}"),
        secrets=SecretStore(),
        used_steps=UsedSteps(),
    )
    manager = TunnelManager(on_event, process="foreground")
    keeper = CpuKeeper()
    keeper.start()  # clients it launches start unpinned (launch.launch)
    server = control.ControlServer(
        control.process_socket(manager.pid), TunnelService(manager).handle
    )
    try:
        with Signals() as signals:
            try:
                signals.logging_in = True
                if signals.ended.is_set():
                    raise Interrupted
                server.start()
                active = manager.open(spec, session)
                signals.logging_in = False
                reconnected = True
                status = hold(
                    spec,
                    active.local_port,
                    active.forwarder.addresses(),
                    out,
                    err,
                    signals.ended,
                    lambda: active.state not in (TunnelState.FAILED, TunnelState.CLOSED),
                    lambda: signals.ended.wait(0.2),
                    launch_client,
                    rdp_file,
                    client_args,
                )
                if status is not None:
                    return status
                return ended(spec, active.state, active.last_error, signals, out)
            finally:
                signals.ended.set()  # a signal from now on changes nothing
                signals.logging_in = False
                manager.close_all()
                server.close()
                keeper.stop()
    except Interrupted:
        # (also one that lands in the clean-up above before it marks the end)
        raise KeyboardInterrupt from None
