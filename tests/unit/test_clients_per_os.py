"""The client command lines on each OS family (BASTIONCTL_PLATFORM_VIEW) and under WSL.

PATH is a directory of this test's own, so which programs exist is the test's choice, not the
machine's; a macOS application is a `<name>.app` directory under ~/Applications (HOME is ours).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastionctl.errors import UsageError
from bastionctl.system import api, clients, files
from bastionctl.tunnels import launch

SetView = Callable[..., None]


def clear_caches() -> None:
    api.view.cache_clear()
    api.has.cache_clear()
    api.is_wsl.cache_clear()


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    return path


@pytest.fixture
def set_view(tmp_path: Path, bin_dir: Path) -> Iterator[SetView]:
    """set_view("darwin"|"win32"|None, wsl=False): this process as on that OS; PATH is bin_dir
    only, HOME is tmp_path/home, and no Windows System32 is mounted. Undone (and api's answers
    forgotten) after the test."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", str(bin_dir))
        patch.setenv("HOME", str(home))
        patch.setattr(clients, "WSL_MSTSC", tmp_path / "no-windows" / "mstsc.exe")

        def choose(view: str | None, wsl: bool = False) -> None:
            if view is None:
                patch.delenv(api.VIEW_SETTING, raising=False)
            else:
                patch.setenv(api.VIEW_SETTING, view)
            if wsl:
                patch.setenv("WSL_DISTRO_NAME", "Ubuntu")
            else:
                patch.delenv("WSL_DISTRO_NAME", raising=False)
            clear_caches()
            if not wsl and api.family() == "linux" and api.is_wsl():
                pytest.skip("this machine is WSL itself")

        yield choose
    clear_caches()


def program(bin_dir: Path, name: str) -> Path:
    path = bin_dir / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def mac_app(name: str) -> Path:
    app = Path.home() / "Applications" / f"{name}.app"
    app.mkdir(parents=True)
    return app


# Every family and WSL, for the tests that hold everywhere.
VIEWS = [(None, False), ("darwin", False), ("win32", False), (None, True)]
VIEW_IDS = ["linux", "darwin", "windows", "wsl"]


# --- linux ------------------------------------------------------------------------------------


def test_linux_mysql_and_sqlcmd(set_view: SetView) -> None:
    set_view(None)
    mysql = launch.client_for("mysql", "127.0.0.1", 53306)
    assert mysql.argv == ["mysql", "--protocol=TCP", "-h", "127.0.0.1", "-P", "53306"]
    assert mysql.terminal and not mysql.hands_off
    assert mysql.package == "mariadb-client (or mysql-client)"
    mssql = launch.client_for("mssql", "127.0.0.1", 51433)
    assert mssql.argv == ["sqlcmd", "-S", "127.0.0.1,51433"]
    assert mssql.terminal and not mssql.hands_off and mssql.package == "mssql-tools18"


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        ((), "xfreerdp"),  # none: the first, and check_installed names the package
        (("xfreerdp3",), "xfreerdp3"),
        (("wlfreerdp", "xfreerdp3"), "wlfreerdp"),
        (("xfreerdp", "wlfreerdp"), "xfreerdp"),
    ],
)
def test_linux_rdp_takes_the_freerdp_that_is_installed(
    set_view: SetView, bin_dir: Path, installed: tuple[str, ...], expected: str
) -> None:
    set_view(None)
    for name in installed:
        program(bin_dir, name)
    command = launch.client_for("rdp", "127.0.0.1", 53389)
    assert command.argv == [expected, "/v:127.0.0.1:53389"]
    assert command.package == "freerdp2-x11"
    assert not command.terminal and not command.hands_off and command.rdp_file is None


def test_linux_ignores_mstsc_exe_outside_wsl(set_view: SetView, bin_dir: Path) -> None:
    set_view(None)
    program(bin_dir, "mstsc.exe")
    assert launch.client_for("rdp", "127.0.0.1", 53389).argv[0] == "xfreerdp"
    assert launch.wsl_note("127.0.0.1", 53389) is None


# --- WSL --------------------------------------------------------------------------------------


def test_wsl_rdp_runs_mstsc_exe_through_interop(set_view: SetView, bin_dir: Path) -> None:
    set_view(None, wsl=True)
    program(bin_dir, "mstsc.exe")
    program(bin_dir, "xfreerdp")  # WSLg's FreeRDP loses to Windows' own client
    command = launch.client_for("rdp", "127.0.0.1", 53389, ["/f"])
    assert command.argv == ["mstsc.exe", "/v:127.0.0.1:53389", "/f"]
    assert not command.hands_off  # interop waits for the Windows process
    launch.check_installed(command)


def test_wsl_finds_mstsc_exe_without_windows_path(set_view: SetView, tmp_path: Path) -> None:
    """Interop on, Windows' PATH not appended (appendWindowsPath = false): /mnt/c's copy."""
    set_view(None, wsl=True)
    mstsc = tmp_path / "c" / "Windows" / "System32" / "mstsc.exe"
    mstsc.parent.mkdir(parents=True)
    mstsc.write_text("#!/bin/sh\n")
    mstsc.chmod(0o755)
    with pytest.MonkeyPatch.context() as patch:  # inside set_view's, undone before it
        patch.setattr(clients, "WSL_MSTSC", mstsc)
        command = launch.client_for("rdp", "localhost", 53389)
    assert command.argv == [str(mstsc), "/v:127.0.0.1:53389"]


def test_wsl_without_interop_falls_back_to_freerdp_then_names_mstsc_exe(
    set_view: SetView, bin_dir: Path
) -> None:
    set_view(None, wsl=True)
    missing = launch.client_for("rdp", "127.0.0.1", 53389)
    assert missing.argv == ["mstsc.exe", "/v:127.0.0.1:53389"]
    assert "mstsc.exe" in missing.package and "freerdp2-x11" in missing.package
    program(bin_dir, "wlfreerdp")
    assert launch.client_for("rdp", "127.0.0.1", 53389).argv[0] == "wlfreerdp"


def test_wsl_keeps_the_linux_database_clients(set_view: SetView) -> None:
    set_view(None, wsl=True)
    assert launch.client_for("mysql", "127.0.0.1", 1).argv[0] == "mysql"
    assert launch.client_for("mssql", "127.0.0.1", 1).argv[0] == "sqlcmd"


@pytest.mark.parametrize(
    ("bind", "address"),
    [("127.0.0.1", "127.0.0.1:53389"), ("localhost", "127.0.0.1:53389"), ("::1", "[::1]:53389")],
)
def test_wsl_note_for_a_loopback_tunnel(set_view: SetView, bind: str, address: str) -> None:
    set_view(None, wsl=True)
    assert launch.wsl_note(bind, 53389) == (
        f"Windows programs reach it at {address} through WSL's localhost forwarding"
    )


def test_no_wsl_note_beyond_loopback_nor_outside_linux(set_view: SetView) -> None:
    set_view(None, wsl=True)
    assert launch.wsl_note("192.0.2.7", 53389) is None  # Windows reaches that address itself
    set_view("darwin", wsl=True)  # WSL_DISTRO_NAME set, but not Linux
    assert not api.is_wsl() and launch.wsl_note("127.0.0.1", 53389) is None


# --- macOS ------------------------------------------------------------------------------------


def test_darwin_without_an_app_opens_an_rdp_url(set_view: SetView) -> None:
    set_view("darwin")
    command = launch.client_for("rdp", "127.0.0.1", 53389, rdp_file=Path("/x/y.rdp"))
    assert command.argv == [
        "open",
        "rdp://full%20address=s:127.0.0.1:53389&prompt%20for%20credentials=i:1",
    ]
    assert command.hands_off and not command.terminal
    assert command.rdp_file is None  # nothing to write: the URL carries the address
    assert command.package == "Microsoft Remote Desktop (Windows App) from the App Store"


def test_darwin_url_for_ipv6_and_extra_args_after_dash_dash_args(set_view: SetView) -> None:
    set_view("darwin")
    command = launch.client_for("rdp", "::1", 53389, ["-n"])
    assert command.argv == [
        "open",
        "rdp://full%20address=s:%5B::1%5D:53389&prompt%20for%20credentials=i:1",
        "--args",
        "-n",
    ]


@pytest.mark.parametrize(
    ("apps", "chosen"),
    [
        (("Microsoft Remote Desktop",), "Microsoft Remote Desktop"),
        (("Windows App",), "Windows App"),
        (("Microsoft Remote Desktop", "Windows App"), "Windows App"),  # the new name first
    ],
)
def test_darwin_opens_the_tunnels_rdp_file_with_the_installed_app(
    set_view: SetView, apps: tuple[str, ...], chosen: str, tmp_path: Path
) -> None:
    set_view("darwin")
    for app in apps:
        mac_app(app)
    rdp = tmp_path / "t.rdp"
    command = launch.client_for("rdp", "127.0.0.1", 53389, ["/x"], rdp_file=rdp)
    assert command.argv == ["open", "-a", chosen, str(rdp), "--args", "/x"]
    assert command.hands_off and command.rdp_file == rdp
    # Without a file to open (check_options asks before there is a port): the URL, by the app.
    bare = launch.client_for("rdp", "127.0.0.1", 53389)
    assert bare.argv[:3] == ["open", "-a", chosen] and bare.argv[3].startswith("rdp://")


def test_darwin_ready_command_writes_its_own_rdp_file(set_view: SetView) -> None:
    set_view("darwin")
    mac_app("Windows App")
    command = launch.ready_command("rdp", "localhost", 53390, "server-03", "Administrator")
    own = files.runtime_dir() / "rdp" / "server-03-53390.rdp"
    assert command.argv == ["open", "-a", "Windows App", str(own)]
    assert own.read_bytes() == (
        b"full address:s:127.0.0.1:53390\r\nprompt for credentials:i:1\r\n"
        b"authentication level:i:2\r\nusername:s:Administrator\r\n"
    )
    assert own.stat().st_mode & 0o777 == 0o600
    assert own.parent.stat().st_mode & 0o777 == 0o700


def test_darwin_ready_command_opens_the_rdp_file_asked_for(
    set_view: SetView, tmp_path: Path
) -> None:
    set_view("darwin")
    mac_app("Microsoft Remote Desktop")
    asked = tmp_path / "mine.rdp"  # written by --rdp-file before the launch
    command = launch.ready_command("rdp", "127.0.0.1", 53389, "server-03", rdp_file=asked)
    assert command.argv == ["open", "-a", "Microsoft Remote Desktop", str(asked)]
    assert not (files.runtime_dir() / "rdp").exists()


def test_darwin_database_clients(set_view: SetView) -> None:
    set_view("darwin")
    mysql = launch.client_for("mysql", "localhost", 53306)
    assert mysql.argv == ["mysql", "--protocol=TCP", "-h", "127.0.0.1", "-P", "53306"]
    assert mysql.terminal and not mysql.hands_off and "brew install mysql-client" in mysql.package
    mssql = launch.client_for("mssql", "127.0.0.1", 51433)
    assert mssql.argv == ["sqlcmd", "-S", "127.0.0.1,51433"]
    assert mssql.terminal and not mssql.hands_off
    assert mssql.package == "sqlcmd (brew install sqlcmd)"


# --- Windows ----------------------------------------------------------------------------------


def test_windows_clients(set_view: SetView, bin_dir: Path) -> None:
    set_view("win32")
    program(bin_dir, "xfreerdp")  # not a Windows program, whatever PATH holds
    rdp = launch.client_for("rdp", "127.0.0.1", 53389)
    assert rdp.argv == ["mstsc", "/v:127.0.0.1:53389"]
    assert not rdp.hands_off and not rdp.terminal  # mstsc runs until the session ends
    assert rdp.package == "mstsc (Remote Desktop Connection, part of Windows)"
    mssql = launch.client_for("mssql", "127.0.0.1", 51433)
    assert mssql.argv == ["sqlcmd", "-S", "127.0.0.1,51433"]
    assert mssql.package == "sqlcmd (Microsoft ODBC + command line tools)" and mssql.terminal
    mysql = launch.client_for("mysql", "127.0.0.1", 53306)
    assert mysql.argv == ["mysql", "--protocol=TCP", "-h", "127.0.0.1", "-P", "53306"]
    assert mysql.terminal and "MySQL Installer" in mysql.package


# --- every family -----------------------------------------------------------------------------


@pytest.mark.parametrize(("view", "wsl"), VIEWS, ids=VIEW_IDS)
@pytest.mark.parametrize(
    ("bind", "host"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("localhost", "127.0.0.1"),  # both loopbacks: the IPv4 one is the address to use
        ("0.0.0.0", "127.0.0.1"),
        ("::", "127.0.0.1"),
        ("::1", "::1"),
        ("127.0.0.2", "127.0.0.2"),
    ],
)
def test_database_clients_connect_to_the_connection_host(
    set_view: SetView, view: str | None, wsl: bool, bind: str, host: str
) -> None:
    set_view(view, wsl)
    assert launch.client_for("mysql", bind, 53306, ["-e", "SELECT 1"]).argv == [
        "mysql",
        "--protocol=TCP",
        "-h",
        host,
        "-P",
        "53306",
        "-e",
        "SELECT 1",
    ]
    assert launch.client_for("mssql", bind, 51433, ["-Q", "SELECT 1"]).argv == [
        "sqlcmd",
        "-S",
        f"{host},51433",
        "-Q",
        "SELECT 1",
    ]


@pytest.mark.parametrize(("view", "wsl"), VIEWS, ids=VIEW_IDS)
@pytest.mark.parametrize(
    ("bind", "address"),
    [("localhost", "127.0.0.1:53389"), ("::1", "[::1]:53389"), ("::", "127.0.0.1:53389")],
)
def test_rdp_address_brackets_ipv6_and_extra_args_come_last(
    set_view: SetView, bin_dir: Path, view: str | None, wsl: bool, bind: str, address: str
) -> None:
    set_view(view, wsl)
    program(bin_dir, "mstsc.exe")
    argv = launch.client_for("rdp", bind, 53389, ["/f", "/admin"]).argv
    assert argv[-2:] == ["/f", "/admin"]
    if api.family() == "darwin":
        assert argv[-3] == "--args"
        assert f"full%20address=s:{address.replace('[', '%5B').replace(']', '%5D')}&" in argv[1]
    else:
        assert argv[1] == f"/v:{address}"


@pytest.mark.parametrize(("view", "wsl"), VIEWS, ids=VIEW_IDS)
@pytest.mark.parametrize("service", [None, "echo", "ssh", "postgres"])
def test_no_client_for_other_services(
    set_view: SetView, view: str | None, wsl: bool, service: str | None
) -> None:
    set_view(view, wsl)
    with pytest.raises(UsageError, match="no client is known for"):
        launch.client_for(service, "127.0.0.1", 5000)


PASSWORD_OPTIONS = {
    "mysql": ("-p", "--pas"),
    "mssql": ("-P", "--password"),
    "rdp": ("/p:", "/pth:", "/password:"),
}


@pytest.mark.parametrize(("view", "wsl"), VIEWS, ids=VIEW_IDS)
@pytest.mark.parametrize("service", ["rdp", "mysql", "mssql"])
def test_bastionctl_never_puts_a_password_on_argv(
    set_view: SetView, bin_dir: Path, view: str | None, wsl: bool, service: str
) -> None:
    set_view(view, wsl)
    program(bin_dir, "mstsc.exe")
    for bind in ("127.0.0.1", "::1", "localhost"):
        command = launch.ready_command(service, bind, 50000, "server-03", "Administrator")
        assert clients.password_argument(service, command.argv) is None
        for arg in command.argv:
            seen = arg.lower() if service == "rdp" else arg  # FreeRDP: any case
            assert not seen.startswith(PASSWORD_OPTIONS[service]), command.argv


@pytest.mark.parametrize(("view", "wsl"), VIEWS, ids=VIEW_IDS)
@pytest.mark.parametrize(
    ("service", "args", "shown"),
    [
        ("mysql", ["-N", "-pS3cret!"], "-p…"),
        ("mysql", ["--password=S3cret!"], "--password=…"),
        ("mysql", ["--pass=S3cret!"], "--pass=…"),
        ("mssql", ["-U", "sa", "-P", "S3cret!"], "-P…"),
        ("mssql", ["-PS3cret!"], "-P…"),
        ("rdp", ["/u:admin", "/p:S3cret!"], "/p:…"),
        ("rdp", ["/pth:S3cret!"], "/pth:…"),
    ],
)
def test_a_client_argument_carrying_a_password_is_refused_without_echoing_it(
    set_view: SetView, view: str | None, wsl: bool, service: str, args: list[str], shown: str
) -> None:
    set_view(view, wsl)
    with pytest.raises(UsageError) as refused:
        launch.client_for(service, "127.0.0.1", 50000, args)
    assert f"the client argument {shown} would put a password on the command line" in str(
        refused.value
    )
    assert "S3cret" not in str(refused.value)


@pytest.mark.parametrize(
    ("service", "args"),
    [
        ("mysql", ["-p"]),  # mysql asks
        ("mysql", ["--password"]),
        ("mysql", ["-P", "3306", "-e", "SELECT 'a -pb'"]),  # -P is the port
        ("mssql", ["-U", "sa"]),  # sqlcmd asks
        ("rdp", ["/u:admin", "/p:"]),  # FreeRDP asks
    ],
)
def test_a_password_the_client_asks_for_is_fine(
    set_view: SetView, service: str, args: list[str]
) -> None:
    set_view(None)
    assert launch.client_for(service, "127.0.0.1", 50000, args).argv[-len(args) :] == args


# --- what a hands-off launcher says -----------------------------------------------------------


def handed(command: launch.ClientCommand, code: str) -> launch.Launched:
    process = subprocess.Popen([sys.executable, "-c", code])
    return launch.Launched(command, process, "the RDP client")


def test_handoff_messages(set_view: SetView) -> None:
    set_view("darwin")
    command = launch.client_for("rdp", "127.0.0.1", 53389)
    worked = handed(command, "pass")
    assert launch.wait_handoff(worked) == 0
    assert launch.handoff_message(worked, 0) == "the RDP client was handed to macOS (open)"
    failed = handed(command, "raise SystemExit(1)")
    assert launch.wait_handoff(failed) == 1
    assert launch.handoff_message(failed, 1) == (
        "open exited with status 1 (is Microsoft Remote Desktop (Windows App) from the App "
        "Store installed?)"
    )
    slow = handed(command, "import time; time.sleep(30)")
    try:
        assert launch.wait_handoff(slow, timeout=0.1) is None
        assert launch.handoff_message(slow, None) == (
            "open has not returned yet; the RDP client may still open"
        )
    finally:
        slow.process.kill()
        slow.process.wait()
