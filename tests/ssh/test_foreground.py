"""The foreground runner: in this process's main thread, and as `bastionctl tunnel` processes."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bastionctl.config import load_config
from bastionctl.otp import SecretStore
from bastionctl.tunnels import client, control
from bastionctl.tunnels.foreground import run_foreground
from bastionctl.tunnels.protocol import TunnelInfo, TunnelRequest, TunnelState
from bastionctl.tunnels.spec import build_spec
from tests.lab.helpers import TunnelProcess, listening, run_cli
from tests.ssh.helpers import (
    CLI_TIMEOUT,
    agent_pid_file,
    bulk_logins,
    echo_roundtrip,
    refusing_ask,
    tunnel_list_json,
    wait_for,
)
from tests.ssh.world import BASTION, World

START_TIMEOUT = 15


def agent_pid() -> int:
    return int(agent_pid_file().read_text())


# --- in this process -----------------------------------------------------------------------


def test_run_foreground_until_tunnel_stop(
    ssh_world: World, bulk_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # run_foreground's CpuKeeper would pin this whole pytest process to one CPU.
    monkeypatch.setenv("BASTIONCTL_CPU", "any")
    config = load_config(bulk_config)
    spec = build_spec(config, TunnelRequest("server-02", "echo"))
    out: list[str] = []
    err: list[str] = []
    prompts: list[str] = []
    seen: list[TunnelInfo] = []
    echoed: list[int] = []  # the ports an echo went through
    problems: list[BaseException] = []
    done = threading.Event()

    def up() -> bool:
        infos = client.all_tunnels()
        seen[:] = infos
        return bool(infos) and infos[0].state is TunnelState.UP

    def helper() -> None:
        try:
            assert wait_for(up, 10), seen
            [info] = seen
            assert info.process == "foreground" and info.id.pid == os.getpid()
            assert listening(info.local_port)
            echo_roundtrip(info.local_port)
            echoed.append(info.local_port)
            assert client.stop_tunnels(info.id) == [info.id]
        except BaseException as exc:
            problems.append(exc)
            # Whatever went wrong, the main thread's run_foreground must come back.
            while not done.wait(0.2):
                try:
                    client.stop_tunnels(None)
                except Exception as again:
                    problems.append(again)

    thread = threading.Thread(target=helper, name="test-foreground-helper", daemon=True)
    thread.start()
    try:
        ask = refusing_ask(prompts)
        status = run_foreground(spec, config.settings, ask, out.append, err.append)
    finally:
        done.set()
        thread.join(15)
    assert not thread.is_alive()
    assert problems == []
    assert status == 0
    port = seen[0].local_port
    assert echoed == [port]
    assert out[0] == "Tunnel open: echo on server-02 via server-01"
    assert f"  connect with: 127.0.0.1:{port}" in out
    assert out[-1] == "Tunnel stopped by `bastionctl tunnel stop`."
    assert prompts == []
    assert not control.process_socket(os.getpid()).exists()
    assert not listening(port)
    assert client.all_tunnels() == []
    assert signal.getsignal(signal.SIGTERM) is not None  # restored, whatever it was


# --- as a process --------------------------------------------------------------------------


def tunnel_args(config: Path, *more: str) -> list[str]:
    return ["--config", str(config), "tunnel", "echo", "server-02", *more]


def main_thread_wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def in_wait_loop(tunnel: TunnelProcess) -> bool:
    """The banner is out and the main thread sleeps in run_foreground's wait loop.

    A signal any earlier (even right after "connect with:") is handled differently; see
    test_a_signal_right_after_the_ready_banner_closes_the_tunnel_normally.
    """
    assert tunnel.proc is not None
    wchan = main_thread_wchan(tunnel.proc.pid)
    return any("Press Ctrl-C to close." in line for line in tunnel.stdout_lines) and (
        "nanosleep" in wchan or "futex" in wchan  # the loop waits on an Event, 0.2 s at a time
    )


def started(config: Path) -> TunnelProcess:
    tunnel = TunnelProcess(tunnel_args(config))
    tunnel.start(timeout=START_TIMEOUT)
    if not tunnel.ready:
        code = tunnel.stop()
        raise AssertionError(f"exit {code}: {tunnel.stdout_lines} {tunnel.stderr_text}")
    return tunnel


def test_foreground_process_is_listed_and_ends_on_sigint(
    ssh_world: World, bulk_config: Path
) -> None:
    tunnel = started(bulk_config)
    try:
        assert tunnel.proc is not None
        port = tunnel.local_port()
        echo_roundtrip(port)
        [entry] = tunnel_list_json()
        # The agent's tunnel, attached to this command's terminal.
        assert entry["process"] == "agent" and entry["attached"] == tunnel.proc.pid
        assert entry["state"] == "up" and entry["local_port"] == port
        assert entry["id"] == f"{agent_pid()}.1" and entry["pid"] == agent_pid()
        assert wait_for(lambda: in_wait_loop(tunnel), 10)
        tunnel.proc.send_signal(signal.SIGINT)  # Ctrl-C
        tunnel.proc.wait(timeout=15)
    finally:
        code = tunnel.stop()
    assert code == 130, tunnel.stderr_text
    assert tunnel.stderr_text == ""
    stdout = "".join(tunnel.stdout_lines)
    assert stdout.rstrip().endswith("Tunnel closed.")
    assert "Press Ctrl-C to close." in stdout
    assert not listening(port)
    assert not control.process_socket(tunnel.proc.pid).exists()
    assert tunnel_list_json() == []


@pytest.mark.parametrize("option", [None, "--debug"])
def test_foreground_process_ends_on_sigterm(
    ssh_world: World, bulk_config: Path, option: str | None
) -> None:
    tunnel = TunnelProcess([*([option] if option else []), *tunnel_args(bulk_config)])
    tunnel.start(timeout=START_TIMEOUT)
    assert tunnel.ready, tunnel.stdout_lines
    try:
        assert tunnel.proc is not None
        port = tunnel.local_port()
        assert wait_for(lambda: in_wait_loop(tunnel), 10)
        tunnel.proc.send_signal(signal.SIGTERM)
        tunnel.proc.wait(timeout=15)
    finally:
        code = tunnel.stop()
    # Once the tunnel is up, SIGTERM ends it like Ctrl-C: "Tunnel closed." and exit 0. While
    # it is still logging in, run_foreground re-raises it as KeyboardInterrupt, which cli.main
    # turns into "bastionctl: interrupted" and exit 130 (test_sigterm_while_logging_in_exits_130).
    assert code == 0, tunnel.stderr_text
    assert "".join(tunnel.stdout_lines).rstrip().endswith("Tunnel closed.")
    assert "interrupted" not in tunnel.stderr_text
    assert "internal error" not in tunnel.stderr_text
    if option is None:
        assert tunnel.stderr_text == ""
    assert not listening(port)
    assert not control.process_socket(tunnel.proc.pid).exists()


def test_foreground_process_ends_on_tunnel_stop(ssh_world: World, bulk_config: Path) -> None:
    tunnel = started(bulk_config)
    try:
        assert tunnel.proc is not None
        port = tunnel.local_port()
        [entry] = tunnel_list_json()
        stop = run_cli("tunnel", "stop", str(entry["id"]), timeout=CLI_TIMEOUT)
        assert stop.returncode == 0, stop.stderr
        tunnel.proc.wait(timeout=15)
    finally:
        code = tunnel.stop()
    assert code == 0, tunnel.stderr_text
    assert "Tunnel stopped by `bastionctl tunnel stop`." in "".join(tunnel.stdout_lines)
    assert not listening(port)


def test_sigterm_while_logging_in_exits_130(ssh_world: World, bulk_config: Path) -> None:
    """A SIGTERM before the tunnel is up: KeyboardInterrupt, "interrupted", exit 130."""
    # No stored secret: the login asks for the code on stdin, which this test never answers.
    assert SecretStore().delete(BASTION)
    before = bulk_logins(ssh_world)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastionctl", *tunnel_args(bulk_config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        lines.extend(iter(proc.stderr.readline, ""))

    reader = threading.Thread(target=pump, name="test-stderr", daemon=True)
    reader.start()
    try:
        asked = wait_for(lambda: any("reading standard input" in x for x in lines), 10)
        assert asked, lines
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        assert proc.stdout is not None and proc.stdin is not None
        out = proc.stdout.read()
        proc.stdout.close()
        proc.stdin.close()
    assert proc.returncode == 130, (out, lines)
    assert lines[-1].strip() == "bastionctl: interrupted", lines
    assert "Tunnel open" not in out
    assert bulk_logins(ssh_world) == before
    assert not control.process_socket(proc.pid).exists()


@pytest.mark.parametrize(
    ("option", "needle"),
    [("--rdp-file", "--rdp-file is for rdp tunnels"), ("--launch", "no client is known")],
)
def test_a_client_option_that_cannot_apply_is_refused_before_any_login(
    ssh_world: World, bulk_config: Path, tmp_path: Path, option: str, needle: str
) -> None:
    rdp = tmp_path / "x.rdp"
    more = [option, str(rdp)] if option == "--rdp-file" else [option]
    before = len(ssh_world.bastion.events)
    result = run_cli(*tunnel_args(bulk_config, *more), timeout=CLI_TIMEOUT, stdin="")
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert not rdp.exists() and tunnel_list_json() == []
    # Refused before any login: the bastion saw nothing.
    assert ssh_world.bastion.events[before:] == []
    assert "Tunnel open" not in result.stdout


def test_a_signal_right_after_the_ready_banner_closes_the_tunnel_normally(
    ssh_world: World, bulk_config: Path
) -> None:
    """Deterministic version of a race: stdout is a one-page pipe, filled so that the banner
    up to "connect with:" fits and the next line ("Press Ctrl-C to close.") blocks."""
    config = load_config(bulk_config)
    local, remote = config.services.get("echo").local_port, ssh_world.service_port("echo")
    banner = (
        "Tunnel open: echo on server-02 via server-01\n"
        f"  listening on 127.0.0.1:{local} -> localhost:{remote} on server-02\n"
        f"  connect with: 127.0.0.1:{local}\n"
    ).encode()
    read_end, write_end = os.pipe()
    data = bytearray()
    proc: subprocess.Popen[bytes] | None = None
    try:
        if fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096) != 4096:
            raise RuntimeError("cannot make a one-page pipe")
        filler = 4096 - len(banner)
        os.write(write_end, b"." * filler)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bastionctl", *tunnel_args(bulk_config)],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=os.environ.copy(),
        )
        os.close(write_end)
        write_end = -1
        pid = proc.pid
        if not wait_for(lambda: "pipe" in main_thread_wchan(pid), 10):
            raise RuntimeError("the banner never blocked")
        if [t.state for t in client.all_tunnels()] != [TunnelState.UP]:
            raise RuntimeError("the tunnel is not up")
        proc.send_signal(signal.SIGTERM)

        def drain() -> None:
            while chunk := os.read(read_end, 65536):
                data.extend(chunk)

        reader = threading.Thread(target=drain, name="test-drain", daemon=True)
        reader.start()
        proc.wait(timeout=15)
        reader.join(5)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if write_end != -1:
            os.close(write_end)
        os.close(read_end)
    assert proc is not None and proc.stderr is not None
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    if not bytes(data[filler:]).startswith(banner):
        raise RuntimeError(f"the banner was not out before the signal: {bytes(data[filler:])!r}")
    assert proc.returncode == 0, stderr
    assert b"Tunnel closed." in data
