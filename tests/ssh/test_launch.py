"""`tunnel rdp --launch` as a process, on each OS's terms (BASTIONCTL_PLATFORM_VIEW), through
the in-process SSH world: the client programs are small scripts first on PATH that record
their arguments.

    darwin   `open` hands the client to macOS and returns at once: the tunnel stays up until
             Ctrl-C (foreground) or `tunnel stop` (--detach)
    win32    `mstsc` runs until the session ends: its exit closes a foreground tunnel
    WSL      `mstsc.exe` through interop, and one line on how Windows reaches the tunnel
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastionctl.system import api, files
from bastionctl.tui.app import create_app
from bastionctl.tui.tunnel_panel import TunnelPanel
from bastionctl.tunnels.client import all_tunnels
from tests.lab.helpers import TunnelProcess, listening, run_cli
from tests.ssh.helpers import (
    CLI_TIMEOUT,
    echo_roundtrip,
    tunnel_list_json,
    wait_for,
)
from tests.ssh.services import free_port
from tests.ssh.world import World
from tests.tui.pilot import ready, until

START_TIMEOUT = 15
HANDED = "bastionctl: the RDP client was handed to macOS (open)"

FAKE_CLIENT = """#!{python}
import json, os, sys, time
from pathlib import Path

record = Path({record!r})
tmp = record.with_name(record.name + ".tmp")
tmp.write_text(json.dumps({{"argv0": sys.argv[0], "args": sys.argv[1:], "pid": os.getpid()}}))
os.replace(tmp, record)
if {block!r}:
    # Until the test releases it (with the exit status to give) or kills it; 2 min at most.
    release = Path({release!r})
    deadline = time.monotonic() + 120
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    sys.exit(int(release.read_text() or "0") if release.exists() else 99)
sys.exit({status!r})
"""


@dataclass
class FakeClient:
    """A client program (or launcher) on PATH that records its argv and exits or blocks."""

    path: Path
    record: Path
    release: Path

    def called(self) -> bool:
        return self.record.exists()

    def args(self) -> list[str]:
        found: list[str] = json.loads(self.record.read_text())["args"]
        return found

    def argv0(self) -> str:
        return str(json.loads(self.record.read_text())["argv0"])

    def pid(self) -> int:
        return int(json.loads(self.record.read_text())["pid"])

    def exit(self, status: int) -> None:
        """A blocking one ends, with `status`."""
        self.release.write_text(str(status))


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    return path


def fake_client(bin_dir: Path, name: str, *, block: bool = False, status: int = 0) -> FakeClient:
    path = bin_dir / name
    record = bin_dir.parent / f"{name}.argv.json"
    release = bin_dir.parent / f"{name}.release"
    text = FAKE_CLIENT.format(
        python=sys.executable, record=str(record), block=block, release=str(release), status=status
    )
    path.write_text(text)
    path.chmod(0o755)
    return FakeClient(path, record, release)


SetView = Callable[..., None]


@pytest.fixture
def platform_view(bin_dir: Path, tmp_path: Path) -> Iterator[SetView]:
    """platform_view("darwin"|"win32"|None, wsl=False): bastionctl processes this test starts
    (and `tunnel list`) run as on that OS, with bin_dir first on PATH and tmp_path/home as
    HOME. Undone, and api's cached answers forgotten, after the test."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        patch.setenv("HOME", str(home))
        patch.setenv("BASTIONCTL_CPU", "any")

        def choose(view: str | None, wsl: bool = False) -> None:
            if view is None:
                patch.delenv(api.VIEW_SETTING, raising=False)
            else:
                patch.setenv(api.VIEW_SETTING, view)
            if wsl:
                patch.setenv("WSL_DISTRO_NAME", "Ubuntu")
            else:
                patch.delenv("WSL_DISTRO_NAME", raising=False)
            api.view.cache_clear()
            api.has.cache_clear()
            api.is_wsl.cache_clear()

        yield choose
    api.view.cache_clear()
    api.has.cache_clear()
    api.is_wsl.cache_clear()


@pytest.fixture
def rdp_config(ssh_world: World, tmp_path: Path, isolated_dirs: Path) -> Path:
    """The bulk user's config, secret stored, with an `rdp` service (the echo service's port)
    that both targets list."""
    text = ssh_world.config_text("bulk").replace('"refused"]', '"refused", "rdp"]')
    text += (
        "\n[services.rdp]\n"
        f"port = {ssh_world.service_port('echo')}\n"
        f"local_port = {free_port()}\n"
        'description = "test rdp: the echo service"\n'
    )
    path = tmp_path / "rdp.toml"
    path.write_text(text)
    ssh_world.store_secret("bulk")
    return path


def rdp_args(config: Path, *more: str) -> list[str]:
    return ["--config", str(config), "tunnel", "rdp", "server-02", *more]


def started(args: list[str]) -> TunnelProcess:
    tunnel = TunnelProcess(args, env=os.environ.copy())
    tunnel.start(timeout=START_TIMEOUT)
    if not tunnel.ready:
        code = tunnel.stop()
        raise AssertionError(f"exit {code}: {tunnel.stdout_lines} {tunnel.stderr_text}")
    return tunnel


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, zombies (exited, not yet reaped) included."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def reaped(tunnel: TunnelProcess, client: FakeClient) -> bool:
    """The launcher has exited and the tunnel process has collected its status (poll())."""
    assert tunnel.proc is not None
    return client.called() and client.pid() not in children(tunnel.proc.pid)


def listed_up(port: int, process: str, attached: int | None = None) -> dict[str, object]:
    [entry] = tunnel_list_json()
    assert entry["process"] == process and entry["service"] == "rdp"
    assert entry["attached"] == attached
    assert entry["state"] == "up" and entry["local_port"] == port
    return entry


# --- macOS: `open` returns at once ------------------------------------------------------------


@pytest.mark.parametrize("app", ["Windows App", None])
def test_darwin_open_returns_at_once_and_the_tunnel_stays_up_until_ctrl_c(
    ssh_world: World,
    rdp_config: Path,
    bin_dir: Path,
    platform_view: SetView,
    app: str | None,
) -> None:
    platform_view("darwin")
    if app is not None:
        (Path(os.environ["HOME"]) / "Applications" / f"{app}.app").mkdir(parents=True)
    launcher = fake_client(bin_dir, "open")
    tunnel = started(rdp_args(rdp_config, "--launch", "--", "/f"))
    try:
        assert tunnel.proc is not None
        port = tunnel.local_port()
        assert wait_for(lambda: reaped(tunnel, launcher), 10)
        # The launcher is gone; the tunnel is not.
        assert tunnel.proc.poll() is None
        echo_roundtrip(port)
        listed_up(port, "agent", tunnel.proc.pid)
        assert listening(port)
    finally:
        code = tunnel.stop()  # SIGTERM, by its pid
    assert code == 0, tunnel.stderr_text
    stdout = "".join(tunnel.stdout_lines)
    assert stdout.rstrip().endswith("Tunnel closed.")
    assert "Client exited" not in stdout
    assert f"{HANDED}; the tunnel stays up until Ctrl-C\n" in tunnel.stderr_text
    assert not listening(port)
    assert tunnel_list_json() == []
    if app is None:
        address = f"127.0.0.1:{port}"
        assert launcher.args() == [
            f"rdp://full%20address=s:{address}&prompt%20for%20credentials=i:1",
            "--args",
            "/f",
        ]
    else:
        rdp = Path(os.environ["XDG_RUNTIME_DIR"]) / "bastionctl" / "rdp" / f"server-02-{port}.rdp"
        assert launcher.args() == ["-a", app, str(rdp), "--args", "/f"]
        assert f"full address:s:127.0.0.1:{port}\r\n" in rdp.read_bytes().decode()


def test_darwin_opens_the_rdp_file_asked_for(
    ssh_world: World, rdp_config: Path, bin_dir: Path, platform_view: SetView, tmp_path: Path
) -> None:
    platform_view("darwin")
    (Path(os.environ["HOME"]) / "Applications" / "Microsoft Remote Desktop.app").mkdir(parents=True)
    launcher = fake_client(bin_dir, "open")
    rdp = tmp_path / "mine.rdp"
    tunnel = started(rdp_args(rdp_config, "--rdp-file", str(rdp), "--launch"))
    try:
        port = tunnel.local_port()
        assert wait_for(lambda: reaped(tunnel, launcher), 10)
        echo_roundtrip(port)
    finally:
        code = tunnel.stop()
    assert code == 0, tunnel.stderr_text
    assert launcher.args() == ["-a", "Microsoft Remote Desktop", str(rdp)]
    assert f"full address:s:127.0.0.1:{port}\r\n" in rdp.read_bytes().decode()
    assert not (Path(os.environ["XDG_RUNTIME_DIR"]) / "bastionctl" / "rdp").exists()


def test_darwin_a_failing_open_is_reported_and_the_tunnel_stays_up(
    ssh_world: World, rdp_config: Path, bin_dir: Path, platform_view: SetView
) -> None:
    platform_view("darwin")
    launcher = fake_client(bin_dir, "open", status=1)  # no app claims rdp:
    tunnel = started(rdp_args(rdp_config, "--launch"))
    try:
        assert tunnel.proc is not None
        port = tunnel.local_port()
        assert wait_for(lambda: reaped(tunnel, launcher), 10)
        assert tunnel.proc.poll() is None
        echo_roundtrip(port)
    finally:
        code = tunnel.stop()
    assert code == 0, tunnel.stderr_text
    assert (
        "bastionctl: open exited with status 1 (is Microsoft Remote Desktop (Windows App) from "
        "the App Store installed?); the tunnel stays up until Ctrl-C\n"
    ) in tunnel.stderr_text
    assert "handed to macOS" not in tunnel.stderr_text


@pytest.mark.parametrize("status", [0, 1])
def test_darwin_detach_waits_for_open_only(
    ssh_world: World, rdp_config: Path, bin_dir: Path, platform_view: SetView, status: int
) -> None:
    platform_view("darwin")
    launcher = fake_client(bin_dir, "open", status=status)
    result = run_cli(*rdp_args(rdp_config, "--detach", "--launch"), timeout=CLI_TIMEOUT)
    try:
        assert launcher.called()
        [entry] = tunnel_list_json()
        assert entry["process"] == "agent" and entry["state"] == "up"
        port = entry["local_port"]
        assert isinstance(port, int)
        echo_roundtrip(port)
        stays = f"the tunnel stays up until `bastionctl tunnel stop {entry['id']}`"
        if status == 0:
            assert result.returncode == 0, result.stderr
            assert f"{HANDED}; {stays}\n" in result.stderr
        else:
            assert result.returncode == 1
            assert "open exited with status 1 (is Microsoft" in result.stderr
            assert stays in result.stderr
    finally:
        assert run_cli("tunnel", "stop", "--all", timeout=CLI_TIMEOUT).returncode == 0


# --- Windows: mstsc runs until the session ends ------------------------------------------------


def test_win32_mstsc_exit_closes_the_foreground_tunnel(
    ssh_world: World, rdp_config: Path, bin_dir: Path, platform_view: SetView
) -> None:
    platform_view("win32")
    mstsc = fake_client(bin_dir, "mstsc", block=True)
    tunnel = started(rdp_args(rdp_config, "--launch", "--", "/admin"))
    try:
        assert tunnel.proc is not None
        port = tunnel.local_port()
        assert wait_for(mstsc.called, 10)
        echo_roundtrip(port)
        listed_up(port, "agent", tunnel.proc.pid)
        mstsc.exit(3)
        tunnel.proc.wait(timeout=15)
    finally:
        code = tunnel.stop()
    assert mstsc.args() == [f"/v:127.0.0.1:{port}", "/admin"]
    assert code == 3, tunnel.stderr_text
    assert "Client exited with status 3; tunnel closed." in "".join(tunnel.stdout_lines)
    assert "handed to" not in tunnel.stderr_text
    assert not listening(port)


# --- WSL: the Windows client through interop ---------------------------------------------------


def test_wsl_launches_mstsc_exe_and_says_how_windows_reaches_the_tunnel(
    ssh_world: World, rdp_config: Path, bin_dir: Path, platform_view: SetView
) -> None:
    platform_view(None, wsl=True)
    fake_client(bin_dir, "xfreerdp", block=True)  # WSLg's FreeRDP loses to Windows' client
    mstsc = fake_client(bin_dir, "mstsc.exe", block=True)
    tunnel = started(rdp_args(rdp_config, "--launch"))
    try:
        assert tunnel.proc is not None
        port = tunnel.local_port()
        assert wait_for(mstsc.called, 10)
        echo_roundtrip(port)
        mstsc.exit(0)
        tunnel.proc.wait(timeout=15)
    finally:
        code = tunnel.stop()
    assert code == 0, tunnel.stderr_text
    assert Path(mstsc.argv0()).name == "mstsc.exe"
    assert mstsc.args() == [f"/v:127.0.0.1:{port}"]
    assert not (bin_dir.parent / "xfreerdp.argv.json").exists()
    stdout = "".join(tunnel.stdout_lines)
    note = f"  Windows programs reach it at 127.0.0.1:{port} through WSL's localhost forwarding\n"
    assert note in stdout
    assert stdout.index("connect with:") < stdout.index(note) < stdout.index("Press Ctrl-C")
    assert "Client exited with status 0; tunnel closed." in stdout


def test_wsl_note_with_detach(
    ssh_world: World, rdp_config: Path, bin_dir: Path, platform_view: SetView
) -> None:
    platform_view(None, wsl=True)
    result = run_cli(*rdp_args(rdp_config, "--detach"), timeout=CLI_TIMEOUT)
    try:
        assert result.returncode == 0, result.stderr
        [entry] = tunnel_list_json()
        port = entry["local_port"]
        assert (
            f"  Windows programs reach it at 127.0.0.1:{port} through WSL's localhost forwarding\n"
        ) in result.stdout
    finally:
        assert run_cli("tunnel", "stop", "--all", timeout=CLI_TIMEOUT).returncode == 0


def test_no_wsl_note_outside_wsl(
    ssh_world: World, rdp_config: Path, platform_view: SetView
) -> None:
    platform_view(None)
    if api.is_wsl():
        pytest.skip("this machine is WSL itself")
    tunnel = started(rdp_args(rdp_config))
    code = tunnel.stop()
    assert code == 0, tunnel.stderr_text
    assert "WSL" not in "".join(tunnel.stdout_lines)


# --- the TUI's `o` ----------------------------------------------------------------------------


async def test_tui_launch_on_darwin_hands_off_and_says_so(
    ssh_world: World, rdp_config: Path, bin_dir: Path, platform_view: SetView
) -> None:
    """`o` on a tunnel in the TUI, as on macOS: `open -a APP FILE.rdp`, one notification."""
    platform_view("darwin")  # this process too: the TUI runs here
    (Path(os.environ["HOME"]) / "Applications" / "Windows App.app").mkdir(parents=True)
    launcher = fake_client(bin_dir, "open")
    opened = await asyncio.to_thread(
        run_cli, *rdp_args(rdp_config, "--detach"), timeout=CLI_TIMEOUT
    )
    assert opened.returncode == 0, opened.stderr
    try:
        [info] = await asyncio.to_thread(all_tunnels)
        tui = create_app(rdp_config, check_dns=False)
        async with tui.run_test(size=(130, 40)) as pilot:
            await ready(pilot, tui)
            panel = tui.query_one(TunnelPanel)
            await until(pilot, lambda: panel.row_count == 1)
            panel.focus()
            await pilot.press("o")
            handed = "the RDP client was handed to macOS (open) for server-02"
            await until(pilot, lambda: any(n.message == handed for n in tui._notifications))
        rdp = files.runtime_dir() / "rdp" / f"server-02-{info.local_port}.rdp"
        assert launcher.args() == ["-a", "Windows App", str(rdp)]
        assert f"full address:s:127.0.0.1:{info.local_port}\r\n" in rdp.read_bytes().decode()
    finally:
        stopped = await asyncio.to_thread(run_cli, "tunnel", "stop", "--all")
        assert stopped.returncode == 0, stopped.stderr
