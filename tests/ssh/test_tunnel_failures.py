"""What a running tunnel could not carry is told (rate-limited) and counted; clients that come
while the login runs wait for it, a bounded number for a bounded time."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastionctl.errors import AuthError, NeedsInput
from bastionctl.tunnels import failures
from bastionctl.tunnels.manager import MAX_HELD, ManagedTunnel
from bastionctl.tunnels.protocol import TunnelEvent, TunnelState
from tests.lab.helpers import TunnelProcess, run_cli
from tests.ssh.helpers import (
    CLI_TIMEOUT,
    Tunnels,
    connect,
    make_session,
    read_line,
    refused_at_once,
    tunnel_list_json,
    wait_for,
)
from tests.ssh.services import GREETING, free_port
from tests.ssh.world import World


def told(events: list[TunnelEvent]) -> list[str]:
    """The failure lines front ends were given."""
    return [event.message for event in list(events) if event.failure]


def reason(world: World) -> str:
    port = world.service_port("refused")
    return f"nothing listens on localhost:{port} on server-02 (connect failed)"


# --- a refused forward ---------------------------------------------------------------------


def test_a_repeating_refusal_is_told_once_then_once_per_interval_with_its_count(
    ssh_world: World, bulk_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(failures, "INTERVAL", 1.5)
    expected = f"client connection closed: {reason(ssh_world)}"
    with Tunnels(bulk_config, tmp_path) as tunnels:
        tunnel = tunnels.open("server-02", "refused")
        for _ in range(10):
            assert refused_at_once(tunnel.local_port)
        assert wait_for(lambda: tunnel.info().errors == 10, 5)
        assert told(tunnels.events) == [expected]
        # The nine repeats are told once, with their count, when the interval has passed.
        assert wait_for(lambda: len(told(tunnels.events)) == 2, 3), told(tunnels.events)
        again = told(tunnels.events)[1]
        assert re.fullmatch(re.escape(expected) + r" \(9 more times in the last [12] s\)", again)
        time.sleep(2)  # nothing new: nothing more is told
        assert len(told(tunnels.events)) == 2
        assert refused_at_once(tunnel.local_port)
        assert wait_for(lambda: len(told(tunnels.events)) == 3, 3)
        assert told(tunnels.events)[2] == expected
        info = tunnel.info()
        assert info.errors == 11 and info.last_error == reason(ssh_world)
        assert info.state is TunnelState.UP  # the path is fine; the target's port is not
        assert all(e.state is TunnelState.UP for e in tunnels.events if e.failure)


def test_the_foreground_prints_one_line_naming_the_port_and_lists_the_error(
    ssh_world: World, bulk_config: Path
) -> None:
    tunnel = TunnelProcess(["--config", str(bulk_config), "tunnel", "refused", "server-02"])
    tunnel.start(timeout=15)
    try:
        assert tunnel.ready, (tunnel.stdout_lines, tunnel.stderr_text)
        for _ in range(5):
            assert refused_at_once(tunnel.local_port())
        listed = wait_for(lambda: tunnel_list_json(bulk_config)[0]["errors"] == 5, 5)
        [entry] = tunnel_list_json(bulk_config)
        assert listed, entry
        assert entry["state"] == "up" and entry["last_error"] == reason(ssh_world)
        assert isinstance(entry["last_error_at"], float)
        table = run_cli("--config", str(bulk_config), "tunnel", "list", timeout=CLI_TIMEOUT)
        assert f"{entry['id']}: 5 clients not served; last error at " in table.stdout
        assert table.stdout.rstrip().endswith(reason(ssh_world)), table.stdout
    finally:
        status = tunnel.stop()
    lines = tunnel.stderr_text.splitlines()
    assert status == 0, lines  # stop() sends SIGTERM: "Tunnel closed.", exit 0
    port = ssh_world.service_port("refused")
    named = [line for line in lines if f"localhost:{port}" in line]
    assert named == [f"bastionctl: client connection closed: {reason(ssh_world)}"], lines
    assert "Secsh" not in tunnel.stderr_text and "paramiko" not in tunnel.stderr_text


@pytest.mark.usefixtures("agent")
def test_a_detached_tunnels_refusals_are_in_the_list(ssh_world: World, bulk_config: Path) -> None:
    opened = run_cli(
        "--config", str(bulk_config), "tunnel", "refused", "server-02", "--detach",
        timeout=CLI_TIMEOUT,
    )  # fmt: skip
    assert opened.returncode == 0, opened.stderr
    match = re.search(r"connect with: 127\.0\.0\.1:(\d+)", opened.stdout)
    assert match, opened.stdout
    assert refused_at_once(int(match.group(1)))
    assert wait_for(lambda: tunnel_list_json(bulk_config)[0]["errors"] == 1, 5)
    [entry] = tunnel_list_json(bulk_config)
    assert entry["process"] == "agent" and entry["state"] == "up"
    assert entry["last_error"] == reason(ssh_world)


def gone(prompt: str, _echo: bool) -> str:
    raise NeedsInput(prompt)


# --- clients that come during the login ------------------------------------------------------


class SlowLogin:
    """A person at the prompt who answers only when the test says so (or answers wrong)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.asked = threading.Event()
        self.go = threading.Event()
        self.wrong = False

    def ask(self, _prompt: str, _echo: bool) -> str:
        self.asked.set()
        assert self.go.wait(30)
        return "000000" if self.wrong else self.world.totp_code("bulk")


class Opening:
    """`tunnels.open` of a greeter tunnel on a fixed port, in a thread, answered by `login`."""

    def __init__(self, tunnels: Tunnels, login: SlowLogin) -> None:
        self.tunnels = tunnels
        self.port = free_port()
        self.result: ManagedTunnel | BaseException | None = None
        self.thread = threading.Thread(target=self._open, name="test-opening", daemon=True)
        self.thread.start()
        assert login.asked.wait(10), "the login never asked"

    def _open(self) -> None:
        try:
            self.result = self.tunnels.open("server-02", "greeter", local_port=self.port)
        except BaseException as exc:
            self.result = exc

    @property
    def tunnel(self) -> ManagedTunnel:
        [tunnel] = self.tunnels.manager.list()
        return tunnel

    def held(self, count: int) -> bool:
        return wait_for(lambda: self.tunnel._held == count, 5)

    def join(self) -> ManagedTunnel | BaseException | None:
        self.thread.join(15)
        return self.result


@pytest.fixture
def slow(
    ssh_world: World, asking_config: Path, tmp_path: Path
) -> Iterator[tuple[Tunnels, SlowLogin]]:
    login = SlowLogin(ssh_world)
    with Tunnels(asking_config, tmp_path) as tunnels:
        tunnels.session = make_session(tunnels.config, tmp_path, ask=login.ask)
        try:
            yield tunnels, login
        finally:
            login.go.set()


def test_a_client_that_connects_during_the_login_is_served_once_it_is_up(
    slow: tuple[Tunnels, SlowLogin],
) -> None:
    tunnels, login = slow
    opening = Opening(tunnels, login)
    with connect(opening.port, timeout=10) as early:
        assert opening.held(1)
        assert opening.tunnel.state is TunnelState.CONNECTING
        login.go.set()
        assert read_line(early) == GREETING
        early.sendall(b"after the login\n")
        assert read_line(early) == b"after the login\n"
    assert isinstance(opening.join(), ManagedTunnel)
    assert opening.tunnel.info().errors == 0 and told(tunnels.events) == []


def test_at_most_max_held_clients_wait_and_the_next_are_closed_and_counted(
    slow: tuple[Tunnels, SlowLogin],
) -> None:
    tunnels, login = slow
    opening = Opening(tunnels, login)
    waiting = [connect(opening.port, timeout=10) for _ in range(MAX_HELD)]
    try:
        assert opening.held(MAX_HELD)
        for _ in range(2):
            with connect(opening.port, timeout=3) as late:
                assert late.recv(1) == b""  # closed at once, not left hanging
        assert wait_for(lambda: opening.tunnel.info().errors == 2, 3)
        expected = f"{MAX_HELD} clients already wait for greeter on server-02 to come up"
        assert (opening.tunnel.info().last_error or "").startswith(expected)
        login.go.set()
        for sock in waiting:
            assert read_line(sock) == GREETING
    finally:
        for sock in waiting:
            sock.close()
    assert isinstance(opening.join(), ManagedTunnel)
    assert opening.tunnel.info().errors == 2


def test_held_clients_are_closed_when_the_login_fails(
    slow: tuple[Tunnels, SlowLogin],
) -> None:
    tunnels, login = slow
    login.wrong = True
    opening = Opening(tunnels, login)
    with connect(opening.port, timeout=10) as early:
        assert opening.held(1)
        login.go.set()
        assert early.recv(1) == b""
    assert isinstance(opening.join(), AuthError)
    tunnel = opening.tunnel if tunnels.manager.list() else None
    assert tunnel is None  # a tunnel that never came up is not kept
    [failed] = [e for e in tunnels.events if e.state is TunnelState.FAILED]
    assert "rejected" in failed.message
    assert told(tunnels.events) == []  # the login's failure is the one line, not once more


def test_a_held_client_waits_at_most_connect_timeout(
    slow: tuple[Tunnels, SlowLogin],
) -> None:
    tunnels, login = slow
    timeout = tunnels.session.settings.connect_timeout  # 5 s in the world's configs
    opening = Opening(tunnels, login)
    with connect(opening.port, timeout=timeout + 5) as early:
        started = time.monotonic()
        assert early.recv(1) == b""
        waited = time.monotonic() - started
    assert timeout - 0.5 <= waited <= timeout + 2, waited
    info = opening.tunnel.info()
    assert info.errors == 1, info
    assert f"was not up within {timeout:g} s" in (info.last_error or "")
    assert told(tunnels.events) == [f"client connection closed: {info.last_error}"]
    login.go.set()
    assert isinstance(opening.join(), ManagedTunnel)
    with connect(opening.port, timeout=10) as later:
        assert read_line(later) == GREETING


def test_a_client_of_a_tunnel_that_needs_input_is_refused_at_once(
    ssh_world: World, asking_config: Path, tmp_path: Path
) -> None:
    """Nobody is there to answer: waiting would only hold the client up."""
    login = SlowLogin(ssh_world)
    login.go.set()
    with Tunnels(asking_config, tmp_path) as tunnels:
        tunnels.session = make_session(tunnels.config, tmp_path, ask=login.ask)
        tunnel = tunnels.open("server-02", "greeter")
        tunnel.session = make_session(tunnels.config, tmp_path, ask=gone)  # its front end left
        ssh_world.bastion.drop_connections()
        assert wait_for(lambda: tunnel.state is TunnelState.NEEDS_INPUT, 10)
        with socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=3) as early:
            assert early.recv(1) == b""
        assert wait_for(lambda: tunnel.info().errors == 1, 3)
        assert "needs-input" in (tunnel.info().last_error or "")
