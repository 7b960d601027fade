"""The agent: one background process per user that owns every detached tunnel.

A second `tunnel --detach` through the same bastion reuses the agent's login. The agent is
forked from the single-threaded CLI (no second interpreter start-up), or started as a fresh
interpreter by a threaded front end such as the TUI; it leaves once it has had no tunnel for
a moment.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from bastionctl import paths
from bastionctl.errors import BastionctlError
from bastionctl.tunnels import control
from bastionctl.tunnels.affinity import unpinned

log = logging.getLogger(__name__)
AGENT_START_TIMEOUT = 15.0
# The agent leaves once it has had no tunnel for this long.
AGENT_IDLE_EXIT = 2.0


class _Stop(Exception):
    pass


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def run_agent(stop: threading.Event | None = None) -> None:
    """The agent's main loop; returns when it has been idle or is told to stop.

    In its own process SIGTERM and SIGINT stop it; run in a thread, `stop` does.
    """
    # paramiko is imported only where SSH happens: `tunnel --detach` and `tunnel list` start
    # faster without it, and a forked agent imports it once, itself.
    from bastionctl.otp import SecretStore
    from bastionctl.tunnels.affinity import CpuKeeper
    from bastionctl.tunnels.manager import TunnelManager
    from bastionctl.tunnels.service import TunnelService

    keeper = CpuKeeper()
    keeper.start()
    manager = TunnelManager(process="agent")
    secrets = SecretStore()
    service = TunnelService(manager, can_open=True, secrets=secrets)
    server = control.ControlServer(control.agent_socket(), service.handle)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGINT, _raise_stop)
    server.start()
    # keyring takes tens of ms to import: done while the first request is on its way.
    threading.Thread(target=secrets.warm, name="keyring-warm", daemon=True).start()
    pid_file = server.path.with_suffix(".pid")
    pid_file.write_text(f"{os.getpid()}\n")
    log.info("agent %s listening on %s", os.getpid(), server.path)
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.25):
            idle = time.monotonic() - service.last_activity
            if not manager.list() and not service.busy and idle > AGENT_IDLE_EXIT:
                break
    except _Stop:
        pass
    finally:
        server.close()
        manager.close_all()
        keeper.stop()
        pid_file.unlink(missing_ok=True)
        log.info("agent %s stopped", os.getpid())


def ensure_agent() -> Path:
    """The agent's socket, starting the agent first when none answers."""
    path = control.agent_socket()
    if path in set(control.live_sockets()):
        return path
    log_file = paths.state_dir() / "agent.log"
    paths.private_dir(log_file.parent)
    alive = _fork_agent(log_file) if threading.active_count() == 1 else _exec_agent(log_file)
    deadline = time.monotonic() + AGENT_START_TIMEOUT
    while time.monotonic() < deadline:
        if path.exists():
            return path
        if not alive():
            break
        time.sleep(0.005)  # the agent is typically ready within 0.1 s
    raise BastionctlError("the bastionctl agent did not start", f"see {log_file}")


def _exec_agent(log_file: Path) -> Callable[[], bool]:
    """A fresh interpreter runs the agent (what a threaded front end, like the TUI, needs)."""
    with log_file.open("ab") as out, unpinned():
        process = subprocess.Popen(
            [sys.executable, "-m", "bastionctl", *_debug_flag(), "agent"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return lambda: process.poll() is None


def _fork_agent(log_file: Path) -> Callable[[], bool]:
    """A fork of this single-threaded CLI runs the agent: no second interpreter start-up."""
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    # Whatever this process has buffered must not be written a second time by the fork.
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the agent
        status = 0
        try:
            os.setsid()
            _redirect_stdio(log_file)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            root = logging.getLogger()
            root.handlers = [logging.StreamHandler(sys.stderr)]
            root.handlers[0].setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            root.setLevel(logging.INFO if verbose else logging.WARNING)
            run_agent()
        except BaseException:
            log.exception("the agent failed")
            status = 1
        finally:
            logging.shutdown()
            os._exit(status)

    def alive() -> bool:
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return False
        return done == 0

    return alive


def _redirect_stdio(log_file: Path) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)


def _debug_flag() -> list[str]:
    return ["--verbose"] if logging.getLogger().isEnabledFor(logging.INFO) else []
