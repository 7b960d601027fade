"""Shared by the tests against the in-process SSH servers: waiting, clients of a tunnel's port,
sessions and tunnel managers, the agent in a thread, the bastionctl processes a test starts.

Clients here are plain TCP sockets on 127.0.0.1 talking to a tunnel's local port; large
buffers go out in 1 MiB memoryview slices, and what comes back is compared by sha256.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from bastionctl.config import Config, load_config
from bastionctl.errors import AuthError, LoginCancelled
from bastionctl.model import TunnelSpec
from bastionctl.otp import SecretStore, UsedSteps, is_yes_no_question
from bastionctl.ssh import datapath, seam
from bastionctl.ssh.auth import Asker
from bastionctl.ssh.connect import Session
from bastionctl.ssh.datapath import DataPath
from bastionctl.tunnels import control
from bastionctl.tunnels.agent import run_agent
from bastionctl.tunnels.manager import ManagedTunnel, TunnelManager
from bastionctl.tunnels.protocol import TunnelEvent, TunnelRequest, TunnelState
from bastionctl.tunnels.spec import build_spec
from tests.lab.helpers import run_cli
from tests.ssh.world import World

MiB = 1 << 20
TIMEOUT = 15.0  # a socket operation that takes longer than this has hung
CLI_TIMEOUT = 30  # a `bastionctl` command a test runs
PING = b"ping through the tunnel\n"
PROMPT = "server-01: Verification code:"  # the bastion's question, as bastionctl asks it


def wait_for(
    predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.02
) -> bool:
    """True as soon as `predicate()` is; False if it still is not after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# --- clients ----------------------------------------------------------------------------------


class Stream(Protocol):
    """A socket or a paramiko Channel: what the readers and writers here need of either."""

    def recv(self, size: int, /) -> bytes: ...

    def sendall(self, data: bytes, /) -> None: ...


def connect(port: int, timeout: float = TIMEOUT, rcvbuf: int | None = None) -> socket.socket:
    """A client of 127.0.0.1:`port`; `rcvbuf` bounds its receive buffer (set before connect)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def send_chunks(stream: Stream, data: bytes) -> None:
    """sendall in 1 MiB slices of a memoryview (sendall(bytes) copies the rest each packet)."""
    view = memoryview(data)
    for offset in range(0, len(data), MiB):
        stream.sendall(view[offset : offset + MiB])  # type: ignore[arg-type]


def read_line(stream: Stream) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = stream.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def read_to_eof(sock: socket.socket) -> tuple[int, str]:
    """Everything up to the peer's EOF: how many bytes and their sha256."""
    digest = hashlib.sha256()
    count = 0
    buffer = bytearray(MiB)
    view = memoryview(buffer)
    while received := sock.recv_into(buffer):
        digest.update(view[:received])
        count += received
    return count, digest.hexdigest()


def read_exactly(sock: socket.socket, size: int) -> tuple[int, str]:
    """Up to `size` bytes (fewer at an early EOF): how many and their sha256."""
    digest = hashlib.sha256()
    count = 0
    buffer = bytearray(MiB)
    view = memoryview(buffer)
    while count < size:
        received = sock.recv_into(buffer, min(MiB, size - count))
        if not received:
            break
        digest.update(view[:received])
        count += received
    return count, digest.hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Background:
    """Runs `work` in a thread; join() re-raises what it raised."""

    def __init__(self, work: Callable[[], None], name: str) -> None:
        self.error: BaseException | None = None
        self._work = work
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # handed to the test by join()
            self.error = exc

    def join(self, timeout: float = TIMEOUT) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self._thread.name} still runs after {timeout} s"
        if self.error is not None:
            raise self.error


def echo_roundtrip(port: int, data: bytes = PING) -> None:
    """`data` through the echo service behind local `port` and back, intact, then the echo's
    EOF after ours."""
    with connect(port) as sock:

        def upload() -> None:
            send_chunks(sock, data)
            sock.shutdown(socket.SHUT_WR)

        sender = Background(upload, "test-echo-upload")
        count, digest = read_to_eof(sock)
        sender.join()
    assert count == len(data)
    assert digest == sha256(data)


def download(port: int, size: int) -> tuple[int, str]:
    """`size` bytes asked of a source service: how many came before its EOF, their sha256."""
    with connect(port) as sock:
        sock.sendall(f"{size}\n".encode())
        return read_to_eof(sock)


def upload(port: int, data: bytes) -> str:
    """`data` into a sink service; its answer (the sha256 it computed), checked to end in EOF."""
    with connect(port) as sock:
        sender = Background(lambda: send_chunks(sock, data), "test-sink-upload")
        sender.join(60)
        sock.shutdown(socket.SHUT_WR)  # the half-close the sink waits for
        answer = read_line(sock)
        assert sock.recv(1) == b"", "more than one line, or no EOF, after the sink's answer"
    return answer.decode().strip()


def refused_at_once(port: int) -> bool:
    """A client that connects to `port` is closed without a byte (recv gives b"")."""
    with connect(port, timeout=10) as sock:
        return sock.recv(1) == b""


def port_free(port: int) -> bool:
    """Nothing holds 127.0.0.1:`port`: a listener could bind it now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def occupy(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:`port`; close it when done."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
    except BaseException:
        sock.close()
        raise
    return sock


# --- sessions and tunnel managers in this process ---------------------------------------------


def no_prompt(prompt: str, echo: bool) -> str:
    """The session's `ask` where nothing should be asked: fails the test. A host key's
    yes/no question finds nobody to ask, as without a terminal (the key is refused)."""
    if is_yes_no_question(prompt):
        raise AuthError("no person to ask in this test's session")
    pytest.fail(f"bastionctl asked {prompt!r} (echo={echo}); the secret should have answered")


def refusing_ask(prompts: list[str]) -> Callable[[str, bool], str]:
    """An ask that notes the prompt and declines: with the secret stored nothing should ask."""

    def ask(prompt: str, _echo: bool) -> str:
        prompts.append(prompt)
        raise LoginCancelled(f"the test declines {prompt!r}")

    return ask


def use_data_path(monkeypatch: pytest.MonkeyPatch, path: DataPath) -> DataPath:
    """`path` for this test's managers (and the connect functions); the old choice after."""
    if path.fast:
        seam.install()
    monkeypatch.setattr(datapath, "_active", path)
    return path


def make_session(
    config: Config,
    tmp_path: Path,
    *,
    secrets: SecretStore | None = None,
    notes: list[str] | None = None,
    ask: Asker = no_prompt,
    keepalive_interval: int | None = None,
) -> Session:
    """A front end's session: the keyring's secret (or `secrets`), no person to ask.

    `keepalive_interval` replaces the config's (1 s in the world's configs).
    """
    sink = notes if notes is not None else []
    settings = config.settings
    if keepalive_interval is not None:
        settings = dataclasses.replace(settings, keepalive_interval=keepalive_interval)
    return Session(
        settings=settings,
        ask=ask,
        notify=sink.append,
        secrets=secrets if secrets is not None else SecretStore(),
        used_steps=UsedSteps(tmp_path / "steps.json"),
    )


class Tunnels:
    """A foreground TunnelManager with one session and a config; closes every tunnel on exit.

    Create it after the test chose its data path: the manager's creation installs it.
    """

    def __init__(
        self,
        config_path: Path,
        tmp_path: Path,
        *,
        secrets: SecretStore | None = None,
        keepalive_interval: int | None = None,
    ) -> None:
        self.config = load_config(config_path)
        self.notes: list[str] = []
        self.session = make_session(
            self.config,
            tmp_path,
            secrets=secrets,
            notes=self.notes,
            keepalive_interval=keepalive_interval,
        )
        self.events: list[TunnelEvent] = []
        self.manager = TunnelManager(self.events.append, process="foreground")
        self.opened: list[ManagedTunnel] = []

    def spec(self, host: str, service: str, local_port: int | None = None) -> TunnelSpec:
        return build_spec(self.config, TunnelRequest(host, service, local_port=local_port))

    def open(self, host: str, service: str, local_port: int | None = None) -> ManagedTunnel:
        tunnel = self.manager.open(self.spec(host, service, local_port), self.session)
        self.opened.append(tunnel)
        return tunnel

    def __enter__(self) -> Tunnels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.manager.close_all()


def states(events: list[TunnelEvent]) -> list[TunnelState]:
    return [event.state for event in list(events)]


def saw(events: list[TunnelEvent], state: TunnelState, after: int = 0) -> bool:
    """Whether an event with `state` came, among the events from index `after` on."""
    return state in states(events)[after:]


def bulk_logins(world: World) -> int:
    """Logins of the bulk user the bastion accepted (its keyboard-interactive step)."""
    return world.bastion.logins(user="bulk")


# --- the agent --------------------------------------------------------------------------------


def agent_pid_file() -> Path:
    return control.agent_socket().with_suffix(".pid")


@dataclasses.dataclass
class AgentThread:
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    errors: list[BaseException] = dataclasses.field(default_factory=list)
    thread: threading.Thread | None = None

    def run(self) -> None:
        try:
            run_agent(self.stop)
        except BaseException as exc:
            self.errors.append(exc)

    def join(self, timeout: float) -> bool:
        """Whether the agent's thread has ended within `timeout`."""
        assert self.thread is not None
        self.thread.join(timeout)
        return not self.thread.is_alive()


@contextlib.contextmanager
def agent_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[AgentThread]:
    """run_agent(stop) in a thread, ready (its pid file written after it listens); stopped after."""
    # The agent's CpuKeeper would pin this whole pytest process to one CPU.
    monkeypatch.setenv("BASTIONCTL_CPU", "any")
    agent = AgentThread()
    agent.thread = threading.Thread(target=agent.run, name="test-agent", daemon=True)
    agent.thread.start()
    try:
        # The pid file: written (whole) once the agent listens.
        assert wait_for(agent_pid_file().exists, 10), agent.errors
        assert int(agent_pid_file().read_text()) == os.getpid()
        yield agent
    finally:
        agent.stop.set()
        ended = agent.join(15)
    assert ended
    assert agent.errors == []


def tunnel_list_json(config: Path | None = None) -> list[dict[str, object]]:
    """The tunnels `bastionctl [--config CONFIG] tunnel list --json`, a real process, lists."""
    return list_json(config)["tunnels"]


def logins_json(config: Path | None = None) -> list[dict[str, object]]:
    """The agent's bastion logins `tunnel list --json` lists (used and idle)."""
    return list_json(config)["logins"]


def list_json(config: Path | None = None) -> dict[str, list[dict[str, object]]]:
    options = ["--config", str(config)] if config is not None else []
    result = run_cli(*options, "tunnel", "list", "--json", timeout=CLI_TIMEOUT)
    assert result.returncode == 0, result.stderr
    listed: dict[str, list[dict[str, object]]] = json.loads(result.stdout)
    assert set(listed) == {"tunnels", "logins"}, listed
    return listed


# --- the bastionctl processes a test starts ---------------------------------------------------


def process_gone(pid: int) -> bool:
    """No such process, or only its zombie (its parent, maybe not init, has not reaped it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def is_bastionctl(pid: int) -> bool:
    """Whether `pid` is a bastionctl process other than this one (never signal pytest itself)."""
    if pid == os.getpid():
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"bastionctl" in cmdline


def stop_process(pid: int, timeout: float = 10) -> None:
    """SIGTERM `pid`, then SIGKILL if it is still there after `timeout`; reaped if our child."""
    if not is_bastionctl(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_for(lambda: process_gone(pid), timeout, 0.05):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: process_gone(pid), 5, 0.05)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_agent_process() -> None:
    """The agent process a test started (its pid file), stopped by its pid."""
    try:
        pid = int(agent_pid_file().read_text())
    except (OSError, ValueError):
        return
    stop_process(pid)


def started_processes() -> list[int]:
    """bastionctl processes started with this test's XDG_RUNTIME_DIR (not pytest itself).

    Each test has its own runtime dir (tests/conftest.py isolated_dirs), so this finds every
    process a test started, an agent whose pid file was overwritten or removed included.
    """
    mine = f"XDG_RUNTIME_DIR={os.environ['XDG_RUNTIME_DIR']}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mine in environ and is_bastionctl(int(entry.name)) and not process_gone(int(entry.name)):
            found.append(int(entry.name))
    return found


def stop_started_processes() -> None:
    """Every process this test started, by pid: the agent first (it tidies up on SIGTERM)."""
    stop_agent_process()
    for pid in started_processes():
        stop_process(pid)
