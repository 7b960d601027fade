"""One login per bastion for every tunnel of the user: foreground tunnels are the agent's,
attached to their terminal; the agent keeps a login for `persist` after its last tunnel.

Logins are counted where the bastion accepts the keyboard-interactive step (tests.ssh.server).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from bastionctl.config import load_config
from bastionctl.errors import ProtocolError
from bastionctl.otp import SecretStore
from bastionctl.tunnels import client, control
from bastionctl.tunnels.attached import run_attached
from bastionctl.tunnels.protocol import (
    Listed,
    ListTunnels,
    Message,
    TunnelInfo,
    TunnelRequest,
    TunnelState,
)
from bastionctl.tunnels.spec import build_spec
from tests.lab.helpers import TunnelProcess, listening, run_cli
from tests.ssh.helpers import (
    CLI_TIMEOUT,
    PROMPT,
    AgentThread,
    agent_pid_file,
    bulk_logins,
    echo_roundtrip,
    logins_json,
    process_gone,
    tunnel_list_json,
    wait_for,
)
from tests.ssh.test_foreground import in_wait_loop
from tests.ssh.world import BASTION, World

START_TIMEOUT = 15


def foreground(
    config: Path, host: str = "server-02", *more: str, stdin: str | None = None
) -> TunnelProcess:
    """`bastionctl tunnel echo HOST` in the foreground, started and up."""
    tunnel = TunnelProcess(tunnel_args(config, host, *more), stdin=stdin)
    tunnel.start(timeout=START_TIMEOUT)
    if not tunnel.ready:
        code = tunnel.stop()
        raise AssertionError(f"exit {code}: {tunnel.stdout_lines} {tunnel.stderr_text}")
    return tunnel


def tunnel_args(config: Path, host: str = "server-02", *more: str) -> list[str]:
    return ["--config", str(config), "tunnel", "echo", host, *more]


def attached_to(tunnel: TunnelProcess) -> dict[str, object]:
    assert tunnel.proc is not None
    [entry] = [t for t in tunnel_list_json() if t["attached"] == tunnel.proc.pid]
    return entry


def agent_pid() -> int:
    return int(agent_pid_file().read_text())


def test_two_foreground_tunnels_share_one_login_and_end_apart(
    ssh_world: World, bulk_config: Path
) -> None:
    before = bulk_logins(ssh_world)
    first = foreground(bulk_config, "server-02")
    second: TunnelProcess | None = None
    try:
        assert bulk_logins(ssh_world) - before == 1
        asked = time.monotonic()
        second = foreground(bulk_config, "server-03")
        assert time.monotonic() - asked < 3.0
        assert bulk_logins(ssh_world) - before == 1  # the second rode on the first's login
        one, two = attached_to(first), attached_to(second)
        assert one["pid"] == two["pid"] == agent_pid()
        assert one["process"] == two["process"] == "agent"
        port1, port2 = first.local_port(), second.local_port()
        for port in (port1, port2):
            echo_roundtrip(port)
        # Ctrl-C in the second terminal ends only the second tunnel.
        assert second.proc is not None
        assert wait_for(lambda: in_wait_loop(second), 10)
        second.proc.send_signal(signal.SIGINT)
        second.proc.wait(timeout=15)
        assert second.stop() == 130, second.stderr_text
        assert "".join(second.stdout_lines).rstrip().endswith("Tunnel closed.")
        assert not listening(port2)
        assert listening(port1)
        echo_roundtrip(port1)
        assert [t["id"] for t in tunnel_list_json()] == [one["id"]]
    finally:
        if second is not None:
            second.stop()
        code = first.stop()
    assert code == 0, first.stderr_text
    assert first.stderr_text == ""
    assert tunnel_list_json() == []


def test_four_foreground_tunnels_started_together_log_in_once(
    ssh_world: World, bulk_config: Path
) -> None:
    before = bulk_logins(ssh_world)
    tunnels = [
        TunnelProcess(["--config", str(bulk_config), "tunnel", "echo", host])
        for host in ("server-02", "server-03", "server-02", "server-03")
    ]
    starters = [threading.Thread(target=t.start, args=(START_TIMEOUT,)) for t in tunnels]
    try:
        for starter in starters:
            starter.start()
        for starter in starters:
            starter.join(START_TIMEOUT + 5)
        assert all(t.ready for t in tunnels), [(t.stdout_lines, t.stderr_text) for t in tunnels]
        assert bulk_logins(ssh_world) - before == 1
        listed = tunnel_list_json()
        assert len(listed) == 4 and {t["pid"] for t in listed} == {agent_pid()}
        assert {t["attached"] for t in listed} == {t.proc.pid for t in tunnels if t.proc}
    finally:
        codes = [t.stop() for t in tunnels]
    assert codes == [0, 0, 0, 0], [t.stderr_text for t in tunnels]


def test_a_tunnel_within_persist_needs_no_code_and_logout_closes_the_login(
    ssh_world: World, asking_config: Path
) -> None:
    """No secret in the keyring: every bastion login asks for a code on standard input."""
    before = bulk_logins(ssh_world)
    first = foreground(asking_config, stdin=ssh_world.totp_code("bulk") + "\n")
    assert first.stop() == 0, first.stderr_text
    assert PROMPT in first.stderr_text
    assert bulk_logins(ssh_world) - before == 1
    # The login outlives the tunnel: listed idle, with when it closes (persist: 600 s).
    [login] = logins_json()
    assert login["bastion"] == BASTION and login["tunnels"] == 0
    assert isinstance(login["closes_in"], float) and 590 < login["closes_in"] <= 600
    table = run_cli("tunnel", "list", timeout=CLI_TIMEOUT)
    assert table.stdout.startswith("no tunnels\nidle login to server-01: closes at ")
    assert "`bastionctl logout server-01` closes it now" in table.stdout
    # Nothing on standard input this time: the login is there, so nothing asks.
    again = foreground(asking_config, stdin="")
    assert again.stop() == 0, again.stderr_text
    assert "Verification code" not in again.stderr_text
    assert bulk_logins(ssh_world) - before == 1
    # `logout` closes it now; a name that is no bastion is a usage error.
    unknown = run_cli("--config", str(asking_config), "logout", "server-99", timeout=CLI_TIMEOUT)
    assert unknown.returncode == 2, unknown.stderr
    assert unknown.stderr.strip() == (
        "bastionctl: error: unknown bastion 'server-99'; bastions: server-01"
    )
    out = run_cli("--config", str(asking_config), "logout", BASTION, timeout=CLI_TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "closed the idle login to server-01\n"
    assert logins_json() == []
    out = run_cli("--config", str(asking_config), "logout", timeout=CLI_TIMEOUT)
    assert (out.returncode, out.stdout) == (0, "no idle logins; nothing closed\n")
    # And the next tunnel asks again.
    third = TunnelProcess(tunnel_args(asking_config), stdin="").start(timeout=START_TIMEOUT)
    assert third.stop() == 1 and not third.ready
    assert "there is no terminal or input to answer from" in third.stderr_text
    assert bulk_logins(ssh_world) - before == 1


def test_after_persist_the_next_tunnel_logs_in_again(ssh_world: World, bulk_config: Path) -> None:
    ssh_world.write_config(bulk_config, "bulk", persist=2)
    before = bulk_logins(ssh_world)
    first = foreground(bulk_config)
    assert first.stop() == 0, first.stderr_text
    [login] = logins_json()
    assert login["tunnels"] == 0 and isinstance(login["closes_in"], float)
    assert login["closes_in"] <= 2
    assert wait_for(lambda: logins_json() == [], 6, 0.2)
    again = foreground(bulk_config)
    assert again.stop() == 0, again.stderr_text
    assert bulk_logins(ssh_world) - before == 2


@pytest.mark.parametrize("how", ["SIGKILL", "SIGHUP"])
def test_the_tunnel_ends_with_its_command(ssh_world: World, bulk_config: Path, how: str) -> None:
    tunnel = foreground(bulk_config)
    assert tunnel.proc is not None
    port = tunnel.local_port()
    assert attached_to(tunnel)["state"] == "up"
    assert wait_for(lambda: in_wait_loop(tunnel), 10)
    tunnel.proc.send_signal(getattr(signal, how))
    tunnel.proc.wait(timeout=15)
    code = tunnel.stop()
    # A dead command's connection closes; the agent closes the tunnel it held.
    assert wait_for(lambda: not listening(port), 5)
    assert tunnel_list_json() == []
    if how == "SIGHUP":
        assert code == 129 and "Tunnel closed." not in "".join(tunnel.stdout_lines)
        assert tunnel.stderr_text == ""
    assert not process_gone(agent_pid())  # the agent, and its login, stay


def test_standalone_logs_in_by_itself_and_says_so(ssh_world: World, bulk_config: Path) -> None:
    before = bulk_logins(ssh_world)
    tunnel = foreground(bulk_config, "server-02", "--standalone")
    try:
        assert tunnel.proc is not None
        [entry] = tunnel_list_json()
        assert entry["process"] == "foreground" and entry["pid"] == tunnel.proc.pid
        assert entry["attached"] is None
        assert not agent_pid_file().exists()
        assert bulk_logins(ssh_world) - before == 1
    finally:
        code = tunnel.stop()
    assert code == 0, tunnel.stderr_text
    assert tunnel.stderr_text == (
        "bastionctl: --standalone: this tunnel logs in by itself, not with the agent's login\n"
    )
    both = run_cli(
        "--config",
        str(bulk_config),
        "tunnel",
        "echo",
        "server-02",
        "--standalone",
        "--detach",
        timeout=CLI_TIMEOUT,
    )
    assert both.returncode == 2 and "--standalone is for a tunnel in the foreground" in both.stderr


def test_an_agent_that_cannot_attach_leaves_the_tunnel_to_log_in_by_itself(
    ssh_world: World, bulk_config: Path
) -> None:
    """An agent of another bastionctl version (it knows no attach request)."""

    def older(request: Message, _conn: control.Connection) -> Listed:
        if isinstance(request, ListTunnels):
            return Listed(os.getpid(), "agent", ())
        raise ProtocolError(f"unknown bastionctl control message type {request.TYPE!r}")

    server = control.ControlServer(control.agent_socket(), older)
    server.start()
    try:
        tunnel = foreground(bulk_config)
        try:
            assert tunnel.proc is not None
            [entry] = tunnel_list_json()
            assert entry["process"] == "foreground" and entry["pid"] == tunnel.proc.pid
        finally:
            code = tunnel.stop()
    finally:
        server.close()
    assert code == 0, tunnel.stderr_text
    [line] = tunnel.stderr_text.splitlines()
    assert line == (
        "bastionctl: the bastionctl agent cannot be used: unknown bastionctl control message "
        "type 'attach'; this tunnel logs in by itself instead"
    )


# --- in this process: the agent in a thread, the command in the main thread -------------------


def test_run_attached_relays_a_reconnects_prompt_until_tunnel_stop(
    ssh_world: World, asking_config: Path, agent: AgentThread
) -> None:
    assert not SecretStore().get(BASTION)
    config = load_config(asking_config)
    request = TunnelRequest("server-02", "echo", config=str(asking_config))
    spec = build_spec(config, request)
    out: list[str] = []
    err: list[str] = []
    prompts: list[str] = []
    seen: list[TunnelInfo] = []
    problems: list[BaseException] = []
    done = threading.Event()

    def ask(prompt: str, _echo: bool) -> str:
        prompts.append(prompt)
        return ssh_world.totp_code("bulk")

    def state() -> TunnelState | None:
        seen[:] = client.all_tunnels()
        return seen[0].state if seen else None

    def helper() -> None:
        try:
            assert wait_for(lambda: state() is TunnelState.UP, 10), seen
            [info] = seen
            assert info.attached == os.getpid() and info.process == "agent"
            echo_roundtrip(info.local_port)
            # The path breaks: the reconnect's question comes to this terminal, not to
            # needs-input (the tunnel's front end is still here).
            ssh_world.bastion.drop_connections()
            assert wait_for(lambda: len(prompts) == 2, 15), (prompts, err)
            assert wait_for(lambda: any("is back on port" in line for line in err), 15), err
            echo_roundtrip(info.local_port)
            assert client.stop_tunnels(info.id) == [info.id]
        except BaseException as exc:
            problems.append(exc)
            while not done.wait(0.2):
                try:
                    client.stop_tunnels(None)
                except Exception as again:
                    problems.append(again)

    thread = threading.Thread(target=helper, name="test-attached-helper", daemon=True)
    thread.start()
    try:
        status = run_attached(request, spec, ask, out.append, err.append)
    finally:
        done.set()
        thread.join(15)
    assert problems == []
    assert status == 0
    assert prompts == [PROMPT, PROMPT]
    assert out[0] == "Tunnel open: echo on server-02 via server-01"
    assert out[-1] == "Tunnel stopped by `bastionctl tunnel stop`."
    assert any(line.startswith("bastionctl: the path to server-02 was lost") for line in err), err
    assert client.all_tunnels() == []
    assert agent.thread is not None and agent.thread.is_alive()
