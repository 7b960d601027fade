"""The agent: one background process per user that owns every detached tunnel.

Every tunnel through the same bastion reuses the agent's login: detached ones and those a
terminal holds (foreground tunnels, attached over their control connection). A login outlives
its last tunnel by the `persist` setting. The agent is forked from the single-threaded CLI
where fork exists (no second interpreter start-up), or started as a fresh, detached interpreter
(a threaded front end such as the TUI, or Windows); it leaves once it has had no tunnel and no
login for a moment.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import filelock

from bastionctl import paths
from bastionctl.atomic import write_atomic
from bastionctl.errors import BastionctlError
from bastionctl.system.cpu import unpinned
from bastionctl.system.files import private_dir
from bastionctl.system.locks import file_lock
from bastionctl.system.processes import can_fork, fork_detached, spawn_detached
from bastionctl.tunnels import control

log = logging.getLogger(__name__)
AGENT_START_TIMEOUT = 15.0
# The agent leaves once it has had no tunnel and no login for this long.
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
    from bastionctl.system.cpu import CpuKeeper
    from bastionctl.tunnels.manager import TunnelManager
    from bastionctl.tunnels.service import TunnelService

    keeper = CpuKeeper()
    keeper.start()
    manager = TunnelManager(process="agent", persist=True)
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
    write_atomic(pid_file, f"{os.getpid()}\n")  # whole, for whoever reads it next
    log.info("agent %s listening on %s", os.getpid(), server.path)
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.25):
            for alias in manager.expire_idle():
                log.info("closed the idle login to %s", alias)
            idle = time.monotonic() - service.last_activity
            held = manager.list() or manager.idle_logins()
            if not held and not service.busy and idle > AGENT_IDLE_EXIT:
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
    """The agent's socket, starting the agent first when none answers.

    Commands started together start one agent: the first starts it under a lock, the others
    wait for it there and find it running.
    """
    path = control.agent_socket()
    if path in set(control.live_sockets()):
        return path
    # Released by this process once the agent listens (a forked agent shares the lock with
    # it until then: never longer, whatever the agent does).
    lock = file_lock(path.with_name("agent.lock"))
    try:
        lock.acquire(timeout=AGENT_START_TIMEOUT)
    except filelock.Timeout:
        raise BastionctlError(
            "the bastionctl agent did not start: another command has been starting it for "
            f"{AGENT_START_TIMEOUT:g} s"
        ) from None
    try:
        if path in set(control.live_sockets()):
            return path
        return _start_agent(path)
    finally:
        lock.release()


def _start_agent(path: Path) -> Path:
    log_file = paths.state_dir() / "agent.log"
    private_dir(log_file.parent)
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    if can_fork():
        alive = fork_detached(run_agent, log_file, verbose)
    else:
        # A threaded front end (the TUI), or no fork at all (Windows): a fresh interpreter.
        argv = [sys.executable, "-m", "bastionctl", *(["--verbose"] if verbose else []), "agent"]
        with unpinned():
            alive = spawn_detached(argv, log_file)
    deadline = time.monotonic() + AGENT_START_TIMEOUT
    while time.monotonic() < deadline:
        if path.exists():
            return path
        if not alive():
            break
        time.sleep(0.005)  # the agent is typically ready within 0.1 s
    raise BastionctlError("the bastionctl agent did not start", f"see {log_file}")
