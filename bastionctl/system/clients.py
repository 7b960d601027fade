"""The client program for a tunnel on each OS: RDP, MySQL and SQL Server.

Which programs an OS has is a matter of platform (`api.family()`, `api.is_wsl()`); among them,
the one that is there wins (on PATH, an installed application). Passwords never go on argv,
where every user of the machine can read them: bastionctl puts none there, and refuses client
arguments that would (`password_argument`).

    linux    xfreerdp / wlfreerdp / xfreerdp3 /v:ADDR; under WSL the Windows client,
             mstsc.exe /v:ADDR, through interop (Windows reaches the tunnel through WSL's
             localhost forwarding)
    darwin   open -a "Windows App" (or "Microsoft Remote Desktop") FILE.rdp, or
             open rdp://full%20address=s:ADDR without either: `open` hands the client to
             macOS and returns at once
    windows  mstsc /v:ADDR
    all      mysql --protocol=TCP -h HOST -P PORT, sqlcmd -S HOST,PORT
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bastionctl.model import hostport
from bastionctl.system import api

# The macOS RDP client, newest name first (Microsoft Remote Desktop became Windows App).
MAC_RDP_APPS = ("Windows App", "Microsoft Remote Desktop")
# Where WSL mounts Windows' own mstsc.exe when interop does not put System32 on PATH.
WSL_MSTSC = Path("/mnt/c/Windows/System32/mstsc.exe")
FREERDP = ("xfreerdp", "wlfreerdp", "xfreerdp3")

_PACKAGES: dict[str, dict[api.Family, str]] = {
    "mysql": {
        "linux": "mariadb-client (or mysql-client)",
        "darwin": "mysql-client (brew install mysql-client, then put its bin on PATH)",
        "windows": "the mysql client (MySQL Installer, or MariaDB for Windows)",
    },
    "mssql": {
        "linux": "mssql-tools18",
        "darwin": "sqlcmd (brew install sqlcmd)",
        "windows": "sqlcmd (Microsoft ODBC + command line tools)",
    },
    "rdp": {
        "linux": "freerdp2-x11",
        "darwin": "Microsoft Remote Desktop (Windows App) from the App Store",
        "windows": "mstsc (Remote Desktop Connection, part of Windows)",
    },
}
_WSL_RDP_PACKAGE = "Windows interop for mstsc.exe (or freerdp2-x11 under WSLg)"
_OS_NAMES: dict[api.Family, str] = {"linux": "the desktop", "darwin": "macOS", "windows": "Windows"}


@dataclass(frozen=True)
class ClientCommand:
    argv: list[str]
    package: str  # what to install when the program is missing, on this OS
    # A program that needs the terminal (a TUI hands it over instead of starting it aside).
    terminal: bool = False
    # The program hands the client to the OS and returns at once (macOS `open`): its exit is
    # not the client's, and says only whether the hand-off worked.
    hands_off: bool = False
    # The .rdp file argv opens: it must be written for the tunnel before the program starts.
    rdp_file: Path | None = None


def command_for(
    service: str | None,
    host: str,
    port: int,
    extra: Sequence[str] = (),
    *,
    rdp_file: Path | None = None,
) -> ClientCommand | None:
    """The client for `service` at `host` (an address literal, the listener's connection
    host), `port`, with `extra` arguments; None when no client is known for it.

    `rdp_file` is where a client that opens a .rdp file (macOS) may have it written.
    """
    family = api.family()
    if service == "mysql":
        # --protocol=TCP: with -h localhost the client would use its Unix socket instead.
        argv = ["mysql", "--protocol=TCP", "-h", host, "-P", str(port), *extra]
        return ClientCommand(argv, _PACKAGES["mysql"][family], terminal=True)
    if service == "mssql":
        argv = ["sqlcmd", "-S", f"{host},{port}", *extra]
        return ClientCommand(argv, _PACKAGES["mssql"][family], terminal=True)
    if service == "rdp":
        address = hostport(host, port)
        if family == "darwin":
            return _mac_rdp(address, extra, rdp_file)
        if family == "windows":
            return ClientCommand(["mstsc", f"/v:{address}", *extra], _PACKAGES["rdp"][family])
        return _linux_rdp(address, extra)
    return None


def _linux_rdp(address: str, extra: Sequence[str]) -> ClientCommand:
    package = _PACKAGES["rdp"]["linux"]
    if api.is_wsl():
        # Windows' own client, through interop; it reaches 127.0.0.1 through WSL's localhost
        # forwarding. Without interop, a FreeRDP under WSLg will do.
        mstsc = _wsl_mstsc()
        if mstsc is not None:
            return ClientCommand([mstsc, f"/v:{address}", *extra], _WSL_RDP_PACKAGE)
        package = _WSL_RDP_PACKAGE
    for program in FREERDP:
        if shutil.which(program):
            return ClientCommand([program, f"/v:{address}", *extra], package)
    first = "mstsc.exe" if api.is_wsl() else FREERDP[0]
    return ClientCommand([first, f"/v:{address}", *extra], package)


def _wsl_mstsc() -> str | None:
    if shutil.which("mstsc.exe"):
        return "mstsc.exe"
    if WSL_MSTSC.is_file():  # interop without Windows' PATH (appendWindowsPath = false)
        return str(WSL_MSTSC)
    return None


def _mac_rdp(address: str, extra: Sequence[str], rdp_file: Path | None) -> ClientCommand:
    package = _PACKAGES["rdp"]["darwin"]
    app = mac_rdp_app()
    more = ["--args", *extra] if extra else []
    if app is not None and rdp_file is not None:
        # The app opens the tunnel's .rdp file: the address (and user) filled in.
        argv = ["open", "-a", app, str(rdp_file), *more]
        return ClientCommand(argv, package, hands_off=True, rdp_file=rdp_file)
    url = rdp_url(address)
    # Without a known app, macOS hands the URL to whichever app claims rdp:.
    argv = ["open", *(("-a", app) if app is not None else ()), url, *more]
    return ClientCommand(argv, package, hands_off=True)


def mac_rdp_app() -> str | None:
    """The name of the installed macOS RDP app (/Applications or ~/Applications), if any."""
    places = [Path("/Applications")]
    with contextlib.suppress(RuntimeError):  # no home to speak of
        places.append(Path.home() / "Applications")
    for name in MAC_RDP_APPS:
        if any((place / f"{name}.app").is_dir() for place in places):
            return name
    return None


def rdp_url(address: str) -> str:
    """An rdp: URL (Microsoft's scheme) that connects to `address` and asks for credentials."""
    return f"rdp://full%20address=s:{quote(address, safe=':')}&prompt%20for%20credentials=i:1"


def handed_to() -> str:
    """What a hands-off launcher gives the client to, for a message: "macOS", ..."""
    return _OS_NAMES[api.family()]


def password_argument(service: str | None, args: Sequence[str]) -> str | None:
    """The option in `args` that would put a password on the client's argv, shown without
    its value (e.g. "-p…"); None when there is none. A bare -p (mysql asks) is fine."""
    for arg in args:
        if service == "mysql":
            if arg.startswith("--pas") and "=" in arg and not arg.endswith("="):
                return arg.split("=", 1)[0] + "=…"
            if arg.startswith("-p") and not arg.startswith("--") and len(arg) > 2:
                return "-p…"
        elif service == "mssql":
            if arg.startswith(("-P", "--password")):
                return "-P…" if arg.startswith("-P") else "--password…"
        elif service == "rdp":
            lowered = arg.lower()
            for option in ("/p:", "/pth:", "/password:"):
                if lowered.startswith(option) and len(arg) > len(option):
                    return option + "…"
    return None
