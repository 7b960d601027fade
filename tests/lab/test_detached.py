"""Detached tunnels, `tunnel list` / `tunnel stop` across processes, load, and faults."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pyotp
import pytest

from bastionctl.lab import LabInfo, restart_target_sshd
from bastionctl.otp import parse_secret
from bastionctl.tunnels import control
from bastionctl.tunnels.protocol import TunnelEvent, TunnelState
from tests.conftest import VIEWS

from .helpers import LogWatch, TunnelProcess, free_port, listening, run_cli
from .test_manager import LabSecrets, children_of, manager_for, wait_for
from .test_tunnel import echo_roundtrip

pytestmark = pytest.mark.lab
MIB = 1024 * 1024


def listed(config: Path) -> list[dict[str, object]]:
    result = run_cli("--config", str(config), "tunnel", "list", "--json")
    assert result.returncode == 0, result.stderr
    tunnels: list[dict[str, object]] = json.loads(result.stdout)["tunnels"]
    return tunnels


def logins(watch: LogWatch) -> int:
    return sum("Accepted keyboard-interactive" in line for line in watch.lines())


@VIEWS
def test_detach_list_stop_across_processes(
    lab: LabInfo, bulk_config: Path, platform_view: str
) -> None:
    watch = LogWatch(lab.bastion_sshd_log)
    ports = [free_port(), free_port()]
    first = run_cli(
        "--config",
        str(bulk_config),
        "tunnel",
        "mssql",
        "server-03",
        "--detach",
        "--local-port",
        str(ports[0]),
    )
    assert first.returncode == 0, first.stderr
    assert f"connect with: 127.0.0.1,{ports[0]}" in first.stdout
    # The agent serves the control channel of this platform view (.sock, or .tcp on Windows).
    assert control.agent_socket().exists()
    second = run_cli(
        "--config",
        str(bulk_config),
        "tunnel",
        "rdp",
        "server-04",
        "--detach",
        "--local-port",
        str(ports[1]),
    )
    assert second.returncode == 0, second.stderr
    tunnels = listed(bulk_config)
    assert [t["local_port"] for t in tunnels] == ports
    assert {t["state"] for t in tunnels} == {"up"} and {t["process"] for t in tunnels} == {"agent"}
    for port in ports:
        sent, got, _ = echo_roundtrip(port, 4 * MIB)
        assert got == sent
    time.sleep(0.3)
    assert logins(watch) == 1  # the second detached tunnel reused the agent's login
    stop = run_cli("tunnel", "stop", str(tunnels[0]["id"]))
    assert stop.returncode == 0, stop.stderr
    assert not listening(ports[0]) and listening(ports[1])
    assert [t["local_port"] for t in listed(bulk_config)] == [ports[1]]
    assert run_cli("tunnel", "stop", "--all").returncode == 0
    assert not listening(ports[1])
    assert listed(bulk_config) == []
    unknown = run_cli("tunnel", "stop", "999.9")
    assert unknown.returncode == 2 and "no tunnel with id 999.9" in unknown.stderr


def test_killed_agent_is_gone_not_stale(
    lab: LabInfo, bulk_config: Path, isolated_dirs: Path
) -> None:
    port = free_port()
    opened = run_cli(
        "--config",
        str(bulk_config),
        "tunnel",
        "mssql",
        "server-04",
        "--detach",
        "--local-port",
        str(port),
    )
    assert opened.returncode == 0, opened.stderr
    [tunnel] = listed(bulk_config)
    os.kill(int(tunnel["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    assert wait_for(lambda: not listening(port), 5)
    assert listed(bulk_config) == []
    assert not (isolated_dirs / "run" / "bastionctl" / "tunnels" / "agent.sock").exists()


def test_foreground_tunnel_is_listed_and_stoppable_from_another_process(
    lab: LabInfo, bulk_config: Path
) -> None:
    port = free_port()
    args = ["--config", str(bulk_config), "tunnel", "rdp", "server-04", "--local-port", str(port)]
    tunnel = TunnelProcess(args).start()
    try:
        [entry] = listed(bulk_config)
        assert entry["process"] == "agent" and entry["local_port"] == port
        assert tunnel.proc is not None and entry["attached"] == tunnel.proc.pid
        assert run_cli("tunnel", "stop", str(entry["id"])).returncode == 0
        assert tunnel.proc is not None
        tunnel.proc.wait(timeout=10)
    finally:
        code = tunnel.stop()
    assert code == 0
    assert "Tunnel stopped by `bastionctl tunnel stop`." in "".join(tunnel.stdout_lines)
    assert not listening(port)


def test_fifty_concurrent_connections_through_one_tunnel(lab: LabInfo, bulk_config: Path) -> None:
    port = free_port()
    args = ["--config", str(bulk_config), "tunnel", "mssql", "server-03", "--local-port", str(port)]
    results: list[tuple[str, str, int]] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            results.append(echo_roundtrip(port, 4 * MIB))
        except BaseException as exc:  # collected and reported below
            errors.append(exc)

    with TunnelProcess(args) as tunnel:
        assert tunnel.ready
        threads = [threading.Thread(target=client) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    assert not errors, errors[:3]
    assert len(results) == 50
    assert all(got == sent and count == 4 * MIB for sent, got, count in results)


def test_totp_rejected_during_reconnect_fails_after_one_attempt(
    lab: LabInfo, tmp_path: Path
) -> None:
    events: list[TunnelEvent] = []
    manager, specs, session = manager_for(lab, tmp_path, events)
    with manager:
        tunnel = manager.open(specs["mssql3"], session)
        # The secret no longer matches the server's: the next login's code is wrong.
        assert isinstance(session.secrets, LabSecrets)
        session.secrets.secret = parse_secret(pyotp.random_base32())
        watch = LogWatch(lab.bastion_sshd_log)
        sessions = children_of(lab.pids["server-01 sshd"])
        for pid in [*sessions, *(g for p in sessions for g in children_of(p))]:
            os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: tunnel.state is TunnelState.FAILED, 20), events
        assert "rejected" in (tunnel.last_error or "")
        time.sleep(3)  # room for a retry that must not happen
        attempts = [
            line
            for line in watch.lines()
            if "keyboard-interactive" in line and ("Failed" in line or "Accepted" in line)
        ]
        assert len(attempts) == 1 and "Failed" in attempts[0], attempts
        assert not listening(tunnel.local_port)


def test_target_sshd_restart_recovers_with_no_new_totp(lab: LabInfo, tmp_path: Path) -> None:
    events: list[TunnelEvent] = []
    manager, specs, session = manager_for(lab, tmp_path, events)
    threads_before = threading.active_count()
    with manager:
        tunnel = manager.open(specs["rdp4"], session)
        port = tunnel.local_port
        sent, got, _ = echo_roundtrip(port, 2 * MIB)
        assert got == sent
        watch = LogWatch(lab.bastion_sshd_log)
        restart_target_sshd(lab, "server-04")
        # The event, not the state: recovery can be quicker than a poll.
        assert wait_for(lambda: TunnelState.RECONNECTING in {e.state for e in events}, 10), events
        assert wait_for(lambda: tunnel.state is TunnelState.UP, 10), events
        sent, got, count = echo_roundtrip(port, 8 * MIB)
        assert (got, count) == (sent, 8 * MIB) and tunnel.local_port == port
        assert manager.bastion_logins("server-01") == 1  # the bastion hop survived
        assert logins(watch) == 0
    assert wait_for(lambda: threading.active_count() <= threads_before + 1, 10)


def test_bastion_link_down_for_20_s_then_back(lab: LabInfo, tmp_path: Path) -> None:
    import subprocess

    events: list[TunnelEvent] = []
    manager, specs, session = manager_for(lab, tmp_path, events)
    threads_before = threading.active_count()
    link = f"{lab.name}-h0"
    with manager:
        tunnel = manager.open(specs["mssql3"], session)
        port = tunnel.local_port
        sent, got, _ = echo_roundtrip(port, 4 * MIB)
        assert got == sent
        subprocess.run(["ip", "link", "set", link, "down"], check=True)
        try:
            down_at = time.monotonic()
            # The event, not the state: recovery can be quicker than a poll.
            assert wait_for(lambda: TunnelState.RECONNECTING in {e.state for e in events}, 10), (
                events
            )
            assert listening(port)  # the local port stays bound while the path is gone
            with socket.create_connection(("127.0.0.1", port), timeout=10) as early:
                held_from = time.monotonic()
                # Held for the path (connect_timeout, 5 s here), then closed cleanly.
                assert early.recv(1) == b""
                assert time.monotonic() - held_from >= 4.5
            info = tunnel.info()
            assert info.errors == 1 and "not up within 5 s" in (info.last_error or ""), info
            time.sleep(max(0.0, 20 - (time.monotonic() - down_at)))
        finally:
            subprocess.run(["ip", "link", "set", link, "up"], check=True)
        back_at = time.monotonic()
        assert wait_for(lambda: tunnel.state is TunnelState.UP, 10), events
        recovered_in = time.monotonic() - back_at
        assert tunnel.local_port == port
        sent, got, count = echo_roundtrip(port, 8 * MIB)
        assert (got, count) == (sent, 8 * MIB)
        assert manager.bastion_logins("server-01") == 2  # one login for the recovery
    assert recovered_in <= 10
    assert wait_for(lambda: threading.active_count() <= threads_before + 1, 10)
