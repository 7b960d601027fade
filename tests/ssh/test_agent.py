"""The agent: in a thread of this process, and as the real process `--detach` forks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bastionctl import paths
from bastionctl.errors import BastionctlError, ConfigError, LoginCancelled, UsageError
from bastionctl.otp import SecretStore
from bastionctl.system import api, channel
from bastionctl.tunnels import client, control
from bastionctl.tunnels.agent import AGENT_IDLE_EXIT
from bastionctl.tunnels.protocol import TunnelInfo, TunnelRequest, TunnelState
from tests.lab.helpers import listening, run_cli
from tests.ssh.helpers import (
    CLI_TIMEOUT,
    agent_pid_file,
    agent_thread,
    bulk_logins,
    echo_roundtrip,
    process_gone,
    refusing_ask,
    tunnel_list_json,
    wait_for,
)
from tests.ssh.world import BASTION, World


def agent_log() -> str:
    try:
        return (paths.state_dir() / "agent.log").read_text(errors="replace")
    except OSError:
        return "(no agent.log)"


# --- the agent in a thread -----------------------------------------------------------------


def test_open_detached_shares_one_login_then_the_idle_agent_leaves(
    ssh_world: World, bulk_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []
    notes: list[str] = []
    ask = refusing_ask(prompts)
    before = bulk_logins(ssh_world)
    ssh_world.write_config(bulk_config, "bulk", persist=0)  # no login outlives the tunnels
    with agent_thread(monkeypatch) as agent:
        first = client.open_detached(
            TunnelRequest("server-02", "echo", config=str(bulk_config)), ask, notes.append
        )
        assert first.process == "agent" and first.state is TunnelState.UP
        assert first.id.pid == os.getpid() and first.host == "server-02"
        assert listening(first.local_port)
        echo_roundtrip(first.local_port)
        assert bulk_logins(ssh_world) - before == 1
        second = client.open_detached(
            TunnelRequest("server-03", "echo", config=str(bulk_config)), ask, notes.append
        )
        third = client.open_detached(
            TunnelRequest("server-02", "greeter", config=str(bulk_config)), ask, notes.append
        )
        assert bulk_logins(ssh_world) - before == 1  # the agent's bastion login, reused twice
        assert len({first.local_port, second.local_port, third.local_port}) == 3
        echo_roundtrip(second.local_port)
        listed = client.all_tunnels()
        assert [t.id for t in listed] == [first.id, second.id, third.id]
        assert {t.process for t in listed} == {"agent"}
        assert {t.state for t in listed} == {TunnelState.UP}
        assert sorted(client.stop_tunnels(None)) == [first.id, second.id, third.id]
        for info in (first, second, third):
            assert not listening(info.local_port)
        assert client.all_tunnels() == []
        # Idle now: it leaves by itself, removing its socket and pid file.
        assert agent.join(AGENT_IDLE_EXIT + 5)
        assert not agent.stop.is_set()
    assert not control.agent_socket().exists()
    assert not agent_pid_file().exists()
    assert prompts == []


def test_stop_event_ends_the_agent_and_its_tunnels(
    ssh_world: World, bulk_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes: list[str] = []
    with agent_thread(monkeypatch) as agent:
        request = TunnelRequest("server-02", "echo", config=str(bulk_config))
        info = client.open_detached(request, refusing_ask([]), notes.append)
        assert listening(info.local_port)
        # A tunnel keeps it: no idle exit while one is open.
        assert not agent.join(AGENT_IDLE_EXIT + 0.5)
        assert [t.state for t in client.all_tunnels()] == [TunnelState.UP]
        agent.stop.set()
        assert agent.join(10)
        assert not listening(info.local_port)
        assert not control.agent_socket().exists()
        assert not agent_pid_file().exists()
        assert client.all_tunnels() == []


@pytest.mark.parametrize(
    ("host", "service", "config", "error", "needle"),
    [
        ("server-99", "echo", None, UsageError, "unknown host 'server-99'"),
        ("server-01", "echo", None, UsageError, "server-01 is a bastion"),
        ("server-02", "ftp", None, UsageError, "unknown service 'ftp'"),
        ("server-02", "echo", "missing.toml", ConfigError, "cannot read config"),
    ],
)
def test_the_agents_refusal_crosses_the_socket(
    ssh_world: World,
    bulk_config: Path,
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    service: str,
    config: str | None,
    error: type[BastionctlError],
    needle: str,
) -> None:
    path = str(bulk_config.parent / config) if config else str(bulk_config)
    notes: list[str] = []
    before = bulk_logins(ssh_world)
    with agent_thread(monkeypatch):
        with pytest.raises(error) as caught:
            client.open_detached(
                TunnelRequest(host, service, config=path), refusing_ask([]), notes.append
            )
        assert type(caught.value) is error
        assert needle in caught.value.message
        if host == "server-99":
            assert caught.value.hint == "valid hosts: server-02, server-03"
        assert client.all_tunnels() == []
        assert control.agent_socket().exists()  # the agent is still there
    assert bulk_logins(ssh_world) == before


def test_the_agents_login_prompts_reach_the_front_end(
    ssh_world: World, bulk_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No stored secret: the agent asks the front end that opens the tunnel, over the socket."""
    assert SecretStore().delete(BASTION)
    prompts: list[tuple[str, bool]] = []
    notes: list[str] = []

    def ask(prompt: str, echo: bool) -> str:
        prompts.append((prompt, echo))
        return ssh_world.totp_code("bulk")

    with agent_thread(monkeypatch):
        request = TunnelRequest("server-02", "echo", config=str(bulk_config))
        with pytest.raises(LoginCancelled):
            client.open_detached(request, refusing_ask([]), notes.append)
        assert client.all_tunnels() == []
        info = client.open_detached(request, ask, notes.append)
        assert info.state is TunnelState.UP
        assert len(prompts) == 1 and "Verification code" in prompts[0][0]
        assert prompts[0][1] is False
        echo_roundtrip(info.local_port)
        client.stop_tunnels(None)


# --- the agent as a real process, as a user runs it ----------------------------------------


def detach(config: Path, host: str, *more: str) -> tuple[subprocess.CompletedProcess[str], int]:
    result = run_cli(
        "--config", str(config), "tunnel", "echo", host, "--detach", *more, timeout=CLI_TIMEOUT
    )
    assert result.returncode == 0, (result.stdout, result.stderr, agent_log())
    match = re.search(r"connect with: 127\.0\.0\.1:(\d+)", result.stdout)
    assert match, result.stdout
    return result, int(match.group(1))


def agent_pid() -> int:
    return int(agent_pid_file().read_text())


def test_detach_twice_shares_the_agents_login(ssh_world: World, bulk_config: Path) -> None:
    before = bulk_logins(ssh_world)
    first, port1 = detach(bulk_config, "server-02")
    pid = agent_pid()
    assert pid != os.getpid() and not process_gone(pid)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    if api.has("fork"):
        # Forked from the CLI (not a fresh `bastionctl agent` interpreter): the CLI's argv.
        assert b"--detach" in cmdline
    else:
        # No fork in this platform view (Windows): a detached `bastionctl agent` interpreter.
        assert cmdline.endswith(b"-m\x00bastionctl\x00agent\x00")
    assert re.search(rf"Tunnel {pid}\.1 open in the background: echo on server-02", first.stdout)
    assert f"Stop it with: bastionctl tunnel stop {pid}.1" in first.stdout
    _second, port2 = detach(bulk_config, "server-03")
    assert agent_pid() == pid
    assert bulk_logins(ssh_world) - before == 1
    for port in (port1, port2):
        echo_roundtrip(port)
    tunnels = tunnel_list_json(bulk_config)
    assert [t["id"] for t in tunnels] == [f"{pid}.1", f"{pid}.2"]
    assert [t["local_port"] for t in tunnels] == [port1, port2]
    assert [t["host"] for t in tunnels] == ["server-02", "server-03"]
    for entry in tunnels:
        assert entry["process"] == "agent" and entry["state"] == "up" and entry["pid"] == pid
        assert entry["errors"] == 0
        assert entry["last_error_at"] is None and entry["waiting_for"] is None
        assert {"errors", "last_error_at", "waiting_for"} <= set(entry)
    table = run_cli("tunnel", "list", timeout=CLI_TIMEOUT)
    assert table.returncode == 0, table.stderr
    assert f"{pid}.1" in table.stdout and f"{pid}.2" in table.stdout


def test_stop_one_then_all_and_the_agent_leaves(ssh_world: World, bulk_config: Path) -> None:
    ssh_world.write_config(bulk_config, "bulk", persist=0)  # no login outlives the tunnels
    _first, port1 = detach(bulk_config, "server-02")
    _second, port2 = detach(bulk_config, "server-03")
    pid = agent_pid()
    stop = run_cli("tunnel", "stop", f"{pid}.1", timeout=CLI_TIMEOUT)
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.strip() == f"stopped 1 tunnel(s): {pid}.1"
    assert not listening(port1) and listening(port2)
    assert [t["id"] for t in tunnel_list_json(bulk_config)] == [f"{pid}.2"]
    stop_all = run_cli("tunnel", "stop", "--all", timeout=CLI_TIMEOUT)
    assert stop_all.returncode == 0, stop_all.stderr
    assert stop_all.stdout.strip() == f"stopped 1 tunnel(s): {pid}.2"
    assert not listening(port2)
    assert tunnel_list_json(bulk_config) == []
    # With no tunnel left the agent leaves by itself, and tidies up after itself.
    assert wait_for(lambda: process_gone(pid), AGENT_IDLE_EXIT + 8, 0.1), agent_log()
    assert not control.agent_socket().exists()
    assert not agent_pid_file().exists()


def test_stop_and_answer_refusals(ssh_world: World, bulk_config: Path) -> None:
    _result, port = detach(bulk_config, "server-02")
    pid = agent_pid()
    unknown = run_cli("tunnel", "stop", "999.9", timeout=CLI_TIMEOUT)
    assert unknown.returncode == 2
    assert "no tunnel with id 999.9" in unknown.stderr
    neither = run_cli("tunnel", "stop", timeout=CLI_TIMEOUT)
    assert neither.returncode == 2 and "give a tunnel ID or --all" in neither.stderr
    both = run_cli("tunnel", "stop", f"{pid}.1", "--all", timeout=CLI_TIMEOUT)
    assert both.returncode == 2 and "give a tunnel ID or --all" in both.stderr
    bad = run_cli("tunnel", "stop", "x", timeout=CLI_TIMEOUT)
    assert bad.returncode == 2 and "'x' is not a tunnel id" in bad.stderr
    not_agents = run_cli("tunnel", "answer", "1.1", timeout=CLI_TIMEOUT)
    assert not_agents.returncode != 0
    assert not_agents.stderr.strip().count("\n") == 0
    assert "tunnel 1.1 is not one of the agent's" in not_agents.stderr
    # The agent's own tunnel, up: it waits for no answer (the agent says so over the socket).
    up = run_cli("tunnel", "answer", f"{pid}.1", timeout=CLI_TIMEOUT)
    assert up.returncode == 2, (up.stdout, up.stderr)
    assert f"tunnel {pid}.1 is up: it waits for no answer" in up.stderr
    assert up.stderr.strip().count("\n") == 0
    assert listening(port)
    assert [t["id"] for t in tunnel_list_json(bulk_config)] == [f"{pid}.1"]


def test_a_killed_agent_leaves_no_stale_state(
    ssh_world: World, bulk_config: Path, isolated_dirs: Path
) -> None:
    _result, port = detach(bulk_config, "server-02")
    pid = agent_pid()
    suffix = channel.UNIX_SUFFIX if channel.unix_sockets() else channel.TCP_SUFFIX
    sock = isolated_dirs / "run" / "bastionctl" / "tunnels" / f"agent{suffix}"
    assert sock == control.agent_socket() and sock.exists()
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: process_gone(pid), 5)
    assert wait_for(lambda: not listening(port), 5)
    assert sock.exists()  # what SIGKILL leaves: the socket file, nobody behind it
    text = run_cli("tunnel", "list", timeout=CLI_TIMEOUT)
    assert text.returncode == 0, text.stderr
    assert text.stdout.strip() == "no tunnels"
    assert not sock.exists()
    assert tunnel_list_json(bulk_config) == []
    # A new --detach starts a new agent on the same path.
    _again, port_again = detach(bulk_config, "server-02")
    assert agent_pid() != pid
    echo_roundtrip(port_again)
    assert [t["state"] for t in tunnel_list_json(bulk_config)] == ["up"]


def test_tunnel_info_from_the_agent_round_trips_through_json(
    ssh_world: World, bulk_config: Path
) -> None:
    """`tunnel list --json` of the agent's tunnel is TunnelInfo.public() of what it reports."""
    _result, port = detach(bulk_config, "server-02")
    [entry] = tunnel_list_json(bulk_config)
    [info] = client.all_tunnels()
    assert isinstance(info, TunnelInfo)
    public = info.public()
    assert set(entry) == set(public)
    for key in set(public) - {"uptime", "bytes_in", "bytes_out", "connections"}:
        assert entry[key] == public[key], key
    assert entry["local_port"] == port


@pytest.mark.parametrize(
    ("option", "needle"),
    [("--rdp-file", "--rdp-file is for rdp tunnels"), ("--launch", "no client is known")],
)
def test_a_failed_detach_leaves_no_tunnel_behind(
    ssh_world: World, bulk_config: Path, tmp_path: Path, option: str, needle: str
) -> None:
    rdp = tmp_path / "x.rdp"
    more = [option, str(rdp)] if option == "--rdp-file" else [option]
    before = bulk_logins(ssh_world)
    result = run_cli(
        "--config",
        str(bulk_config),
        "tunnel",
        "echo",
        "server-02",
        "--detach",
        *more,
        timeout=CLI_TIMEOUT,
    )
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert not rdp.exists()
    # Refused before the agent was asked: no tunnel left behind, no login.
    assert tunnel_list_json(bulk_config) == []
    assert bulk_logins(ssh_world) == before


# The CLI with one stdlib call slowed down in it and in the agent it forks: the agent is
# then, for `delay` seconds, where a busy machine can leave it for a moment.
SLOW_UNIX_SOCKET = """
import runpy, socket, sys, time

real = getattr(socket.socket, {call!r})

def slow(self, *args):
    if self.family == socket.AF_UNIX:
        time.sleep({delay})
    return real(self, *args)

setattr(socket.socket, {call!r}, slow)
sys.argv[0] = "bastionctl"
runpy.run_module("bastionctl", run_name="__main__", alter_sys=True)
"""


def test_detach_waits_until_a_new_agent_listens(ssh_world: World, bulk_config: Path) -> None:
    code = SLOW_UNIX_SOCKET.format(call="listen", delay=0.5)
    args = ["--config", str(bulk_config), "tunnel", "echo", "server-02", "--detach"]
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=os.environ.copy(),
    )
    if result.returncode not in (0, 1):
        raise RuntimeError(f"unexpected: {result}")
    assert result.returncode == 0, result.stderr
    assert "connect with: 127.0.0.1:" in result.stdout
