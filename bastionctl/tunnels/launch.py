"""Starting the client for a tunnel: RDP, MySQL, SQL Server. Passwords never go on argv."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bastionctl.atomic import write_atomic
from bastionctl.errors import BastionctlError, UsageError
from bastionctl.model import TunnelSpec, connection_host, hostport
from bastionctl.tunnels.affinity import unpinned

# Where a line for the person goes (stderr in the CLI).
Line = Callable[[str], None]


@dataclass(frozen=True)
class ClientCommand:
    argv: list[str]
    package: str  # what to install when the program is missing
    # A program that needs the terminal (a TUI hands it over instead of starting it aside).
    terminal: bool = False


def client_for(
    service: str | None, bind: str, port: int, extra: Sequence[str] = ()
) -> ClientCommand:
    """The client for a tunnel of `service` listening on `bind`:`port`."""
    host = connection_host(bind)
    if service == "mysql":
        # --protocol=TCP: with -h localhost the client would use its Unix socket instead.
        return ClientCommand(
            ["mysql", "--protocol=TCP", "-h", host, "-P", str(port), *extra],
            "mariadb-client (or mysql-client)",
            terminal=True,
        )
    if service == "mssql":
        return ClientCommand(
            ["sqlcmd", "-S", f"{host},{port}", *extra], "mssql-tools18", terminal=True
        )
    if service == "rdp":
        address = hostport(host, port)
        if sys.platform == "darwin":
            return ClientCommand(["open", f"rdp://full%20address=s:{address}", *extra], "")
        if sys.platform == "win32":
            return ClientCommand(["mstsc", f"/v:{address}", *extra], "")
        for program in ("xfreerdp", "wlfreerdp", "xfreerdp3"):
            if shutil.which(program):
                return ClientCommand([program, f"/v:{address}", *extra], "freerdp2-x11")
        return ClientCommand(["xfreerdp", f"/v:{address}", *extra], "freerdp2-x11")
    what = f"the {service} service" if service else "a tunnel to a port"
    raise UsageError(f"no client is known for {what}", "connect your client to the address shown")


def check_installed(command: ClientCommand) -> None:
    if shutil.which(command.argv[0]) is None:
        install = f"; install {command.package}" if command.package else ""
        raise BastionctlError(
            f"the client {command.argv[0]} is not installed{install}",
            "the tunnel stays up: connect any client to the address shown",
        )


def launch(command: ClientCommand) -> subprocess.Popen[bytes]:
    check_installed(command)
    with unpinned():  # a viewer or client must not inherit a tunnel process's single CPU
        return subprocess.Popen(command.argv)


def check_options(
    spec: TunnelSpec, launch_client: bool, rdp_file: Path | None, args: Sequence[str]
) -> None:
    """Refuse, before any login, a client option that cannot apply to this tunnel."""
    if rdp_file is not None:
        _check_rdp(spec)
    if launch_client:
        client_for(spec.service.name if spec.service else None, spec.bind, spec.local_port, args)


def _check_rdp(spec: TunnelSpec) -> None:
    if spec.service is None or spec.service.name != "rdp":
        raise UsageError("--rdp-file is for rdp tunnels")


def write_rdp_file(path: Path, spec: TunnelSpec, port: int) -> None:
    _check_rdp(spec)
    address = hostport(spec.connection_host(), port)
    lines = [
        f"full address:s:{address}",
        "prompt for credentials:i:1",
        "authentication level:i:2",
        f"username:s:{spec.host.user}" if spec.host.platform == "windows" else "",
    ]
    write_atomic(path, "\r\n".join(line for line in lines if line) + "\r\n", mode=0o600)


def start_client(
    spec: TunnelSpec,
    port: int,
    launch_it: bool,
    rdp_file: Path | None,
    args: Sequence[str],
    err: Line,
) -> subprocess.Popen[bytes] | None:
    """Write the .rdp file and start the client, as asked; a missing client is one line."""
    if rdp_file is not None:
        write_rdp_file(rdp_file, spec, port)
        err(f"bastionctl: wrote {rdp_file}")
    if not launch_it:
        return None
    command = client_for(spec.service.name if spec.service else None, spec.bind, port, args)
    sys.stdout.flush()
    try:
        return launch(command)
    except BastionctlError as exc:
        err(f"bastionctl: {exc}")
        return None
