"""Serving a TunnelManager on a control socket: the foreground CLI, and the detached agent.

The agent is one background process per user that owns every detached tunnel, so a second
`tunnel --detach` through the same bastion reuses its login. When it needs an answer (a
TOTP code with no secret in the keyring) it asks the front end that made the request.
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
from typing import TYPE_CHECKING, Any

from bastionctl import control, paths
from bastionctl.affinity import unpinned
from bastionctl.config import load_config
from bastionctl.errors import AuthError, BastionctlError, UsageError
from bastionctl.tunnels import PortBook, build_spec, describe, spec_key

if TYPE_CHECKING:
    # paramiko is imported only where SSH happens: `tunnel --detach` and `tunnel list` start
    # faster without it, and a forked agent imports it once, itself.
    from bastionctl.ssh.manager import TunnelManager

log = logging.getLogger(__name__)
AGENT_START_TIMEOUT = 15.0
# The agent leaves once it has had no tunnel for this long.
AGENT_IDLE_EXIT = 2.0


class TunnelHost:
    """Answers list / stop (and, in the agent, open) for one process's TunnelManager."""

    def __init__(self, manager: TunnelManager, kind: str, can_open: bool = False) -> None:
        self.manager = manager
        self.kind = kind
        self.can_open = can_open
        self.pid = os.getpid()
        self.last_activity = time.monotonic()
        self.busy = 0
        self._open_lock = threading.Lock()

    def handle(self, request: control.Message, conn: control.Connection) -> control.Message:
        self.last_activity = time.monotonic()
        op = request.get("op")
        if op == "list":
            tunnels = [describe(t, self.pid, self.kind) for t in self.manager.list()]
            return {"ok": True, "pid": self.pid, "process": self.kind, "tunnels": tunnels}
        if op == "stop":
            wanted = request.get("id")
            for tunnel in self.manager.list():
                if wanted is None or f"{self.pid}.{tunnel.id}" == wanted:
                    self.manager.close(tunnel.id)
            return {"ok": True}
        if op == "open" and self.can_open:
            return self._open(request, conn)
        raise UsageError(f"unknown control request {op!r}")

    def _open(self, request: control.Message, conn: control.Connection) -> control.Message:
        self.busy += 1
        try:
            config_path = request.get("config")
            from bastionctl.inventory.load import load_inventory
            from bastionctl.ssh.hostkeys import KnownHosts

            config = load_inventory(load_config(Path(config_path) if config_path else None)).config
            spec = build_spec(
                config,
                str(request.get("host")),
                request.get("service"),
                request.get("remote_port"),
                request.get("local_port"),
                request.get("bind"),
                bool(request.get("allow_non_loopback")),
            )
            # One login at a time, and its prompts go to the front end that asked.
            with self._open_lock:
                session = self.manager.session
                session.settings = config.settings
                session.known_hosts = KnownHosts(config.settings.known_hosts)
                session.ask = _relay_ask(conn)
                session.notify = lambda message: conn.send({"notice": message})
                try:
                    tunnel = self.manager.open(spec)
                finally:
                    session.ask = _no_front_end
                    session.notify = lambda message: log.info("%s", message)
            PortBook().remember(spec_key(spec), tunnel.local_port, replace=spec.local_port_fixed)
            return {"ok": True, "tunnel": describe(tunnel, self.pid, self.kind)}
        finally:
            self.busy -= 1
            self.last_activity = time.monotonic()


def _relay_ask(conn: control.Connection) -> Callable[[str, bool], str]:
    def ask(prompt: str, echo: bool) -> str:
        conn.send({"prompt": prompt, "echo": echo})
        reply = conn.receive()
        if reply is None or not isinstance(reply.get("answer"), str):
            raise AuthError(f"no answer to {prompt!r}: the front end went away")
        return str(reply["answer"])

    return ask


def _no_front_end(prompt: str, echo: bool) -> str:
    raise AuthError(
        f"the server asked {prompt!r} while reconnecting and no front end is attached",
        "store the TOTP secret with `bastionctl otp set BASTION` so reconnects need nobody",
    )


class _Stop(Exception):
    pass


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def run_agent() -> None:
    """The detached agent's main loop; returns when it has been idle or is told to stop."""
    from bastionctl.affinity import CpuKeeper
    from bastionctl.config import Settings
    from bastionctl.ssh.connect import Session
    from bastionctl.ssh.manager import TunnelManager

    keeper = CpuKeeper()
    keeper.start()
    session = Session(Settings(), ask=_no_front_end, notify=lambda m: log.info("%s", m))
    manager = TunnelManager(session)
    host = TunnelHost(manager, "agent", can_open=True)
    server = control.ControlServer(control.agent_socket(), host.handle)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    server.start()
    if session.secrets is not None:
        # keyring takes tens of ms to import: done while the first request is on its way.
        threading.Thread(target=session.secrets.warm, name="keyring-warm", daemon=True).start()
    pid_file = server.path.with_suffix(".pid")
    pid_file.write_text(f"{os.getpid()}\n")
    log.info("agent %s listening on %s", os.getpid(), server.path)
    try:
        while True:
            time.sleep(0.25)
            idle = time.monotonic() - host.last_activity
            if not manager.list() and not host.busy and idle > AGENT_IDLE_EXIT:
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


def open_detached(
    request: dict[str, Any],
    ask: Callable[[str, bool], str],
    notify: Callable[[str], None],
) -> dict[str, Any]:
    """Ask the agent to open a tunnel, answering its prompts; returns the tunnel summary."""
    conn = control.connect(ensure_agent(), timeout=None)
    try:
        conn.send({"op": "open", **request})
        while True:
            message = conn.receive()
            if message is None:
                raise BastionctlError("the bastionctl agent hung up while opening the tunnel")
            if "prompt" in message:
                conn.send({"answer": ask(str(message["prompt"]), bool(message.get("echo")))})
            elif "notice" in message:
                notify(str(message["notice"]))
            else:
                tunnel: dict[str, Any] = control.raise_for(message)["tunnel"]
                return tunnel
    except BastionctlError:
        raise
    except OSError as exc:
        raise BastionctlError(f"lost the bastionctl agent: {exc.strerror or exc}") from None
    finally:
        conn.close()


def all_tunnels() -> list[dict[str, Any]]:
    tunnels: list[dict[str, Any]] = []
    for path in control.live_sockets():
        try:
            reply = control.request(path, {"op": "list"}, timeout=5)
        except (OSError, BastionctlError):
            continue
        if reply.get("ok"):
            tunnels.extend(reply.get("tunnels", []))
    return sorted(tunnels, key=lambda t: (t["pid"], t["id"]))


def stop_tunnels(tunnel_id: str | None) -> list[str]:
    """Stop one tunnel by id, or every tunnel of every process when `tunnel_id` is None."""
    stopped = []
    for tunnel in all_tunnels():
        if tunnel_id is not None and tunnel["id"] != tunnel_id:
            continue
        pid = tunnel["pid"]
        name = "agent.sock" if tunnel["process"] == "agent" else f"{pid}.sock"
        control.raise_for(
            control.request(control.sockets_dir() / name, {"op": "stop", "id": tunnel["id"]})
        )
        stopped.append(tunnel["id"])
    if tunnel_id is not None and not stopped:
        raise UsageError(f"no tunnel with id {tunnel_id}", "see `bastionctl tunnel list`")
    return stopped
