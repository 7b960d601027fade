"""Starting the client for a tunnel: RDP, MySQL, SQL Server. Passwords never go on argv.

Which program runs on which OS is bastionctl.system.clients' answer; this module refuses what
cannot apply, writes what the client opens (a .rdp file), starts it with every CPU, and words
what happened. A launcher that hands the client to the OS and returns at once (macOS `open`)
is no measure of the client's life: the tunnel stays up after it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bastionctl.atomic import write_atomic
from bastionctl.errors import BastionctlError, UsageError
from bastionctl.model import TunnelSpec, connection_host, hostport, is_loopback
from bastionctl.system import api, clients
from bastionctl.system.clients import ClientCommand
from bastionctl.system.cpu import unpinned
from bastionctl.system.files import runtime_dir

__all__ = ["ClientCommand", "Launched", "Line", "client_for", "launch", "start_client"]

# Where a line for the person goes (stderr in the CLI).
Line = Callable[[str], None]

# Seconds a front end that has nothing else to wait for (--detach, the TUI) gives a hands-off
# launcher to report whether the hand-off worked; `open` takes well under one.
HANDOFF_WAIT = 30.0

_CLIENT_NAMES = {"rdp": "the RDP client", "mysql": "the MySQL client", "mssql": "sqlcmd"}
_PASSWORD_HINTS = {
    "mysql": "put it in ~/.my.cnf, or give -p alone and mysql asks",
    "mssql": "give -U alone and sqlcmd asks, or set SQLCMDPASSWORD",
    "rdp": "let the client ask for it",
}


@dataclass(frozen=True)
class Launched:
    """A started client program, and what it was started as."""

    command: ClientCommand
    process: subprocess.Popen[bytes]
    what: str = "the client"  # for messages: "the RDP client"


def client_for(
    service: str | None,
    bind: str,
    port: int,
    extra: Sequence[str] = (),
    *,
    rdp_file: Path | None = None,
) -> ClientCommand:
    """The client for a tunnel of `service` listening on `bind`:`port`, on this OS.

    `rdp_file`: where a client that opens a .rdp file (macOS) may find it (see ready_command).
    """
    password = clients.password_argument(service, extra)
    if password is not None:
        raise UsageError(
            f"the client argument {password} would put a password on the command line, "
            "where every user of this machine can read it",
            _PASSWORD_HINTS.get(service or "", "let the client ask for it"),
        )
    command = clients.command_for(service, connection_host(bind), port, extra, rdp_file=rdp_file)
    if command is None:
        what = f"the {service} service" if service else "a tunnel to a port"
        raise UsageError(
            f"no client is known for {what}", "connect your client to the address shown"
        )
    return command


def ready_command(
    service: str | None,
    bind: str,
    port: int,
    alias: str,
    username: str | None = None,
    extra: Sequence[str] = (),
    *,
    rdp_file: Path | None = None,
) -> ClientCommand:
    """The client for a tunnel to host `alias`, with what it opens written: a .rdp file (on
    macOS) at `rdp_file` if that was written already (--rdp-file), else one of bastionctl's own
    in its runtime directory. `username`: the Windows user the .rdp file names, if any."""
    own = own_rdp_file(alias, port)
    command = client_for(service, bind, port, extra, rdp_file=rdp_file or own)
    if command.rdp_file == own:
        own.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        own.parent.mkdir(mode=0o700, exist_ok=True)
        _write_rdp(own, hostport(connection_host(bind), port), username)
    return command


def own_rdp_file(alias: str, port: int) -> Path:
    """The .rdp file bastionctl writes for a client that opens one (not --rdp-file's)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", alias)
    return runtime_dir() / "rdp" / f"{name}-{port}.rdp"


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
    _write_rdp(path, address, spec.host.user if spec.host.platform == "windows" else None)


def _write_rdp(path: Path, address: str, username: str | None) -> None:
    lines = [
        f"full address:s:{address}",
        "prompt for credentials:i:1",
        "authentication level:i:2",
        f"username:s:{username}" if username else "",
    ]
    write_atomic(path, "\r\n".join(line for line in lines if line) + "\r\n", mode=0o600)


def write_requested_rdp_file(spec: TunnelSpec, port: int, rdp_file: Path | None, err: Line) -> None:
    """--rdp-file PATH: the .rdp file for this tunnel, and one line saying so."""
    if rdp_file is not None:
        write_rdp_file(rdp_file, spec, port)
        err(f"bastionctl: wrote {rdp_file}")


def start_client(
    spec: TunnelSpec,
    port: int,
    args: Sequence[str],
    err: Line,
    rdp_file: Path | None = None,
) -> Launched | None:
    """--launch: start the client (opening `rdp_file`, written already, where the client takes
    a file); a missing client is one line, and None."""
    service = spec.service.name if spec.service else None
    username = spec.host.user if spec.host.platform == "windows" else None
    sys.stdout.flush()
    try:
        command = ready_command(
            service, spec.bind, port, spec.host.alias, username, args, rdp_file=rdp_file
        )
        process = launch(command)
    except BastionctlError as exc:
        err(f"bastionctl: {exc}")
        return None
    except OSError as exc:
        err(f"bastionctl: cannot start the client: {exc}")
        return None
    return Launched(command, process, client_name(service))


def client_name(service: str | None) -> str:
    """The client of `service`, for messages: "the RDP client"."""
    return _CLIENT_NAMES.get(service or "", "the client")


def handoff_message(launched: Launched, status: int | None) -> str:
    """What a hands-off launcher's exit `status` (None: not yet) says, as a phrase."""
    program = Path(launched.command.argv[0]).name
    if status is None:
        return f"{program} has not returned yet; {launched.what} may still open"
    if status == 0:
        return f"{launched.what} was handed to {clients.handed_to()} ({program})"
    package = launched.command.package
    installed = f" (is {package} installed?)" if package else ""
    return f"{program} exited with status {status}{installed}"


def wait_handoff(launched: Launched, timeout: float = HANDOFF_WAIT) -> int | None:
    """A hands-off launcher's exit status, or None if it has not returned within `timeout`."""
    try:
        return launched.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def wsl_note(bind: str, port: int) -> str | None:
    """Under WSL, for a tunnel on loopback: how Windows programs reach it (one line)."""
    if not api.is_wsl() or not is_loopback(bind):
        return None
    address = hostport(connection_host(bind), port)
    return f"Windows programs reach it at {address} through WSL's localhost forwarding"
