"""Servers that say hostile things: escape sequences (OSC 52 writes the clipboard, OSC 0 the
window title, 8-bit CSI/OSC) and Rich/Textual markup (`[/]`, `[@click=app.screenshot()]`) in
their version line, banner, prompts and error texts.

Nothing of it reaches a terminal raw (the CLI's stdout and stderr, with -v and with --debug),
the TUI shows it as plain text and stays alive, and a login's question names the server that
asks it (bastion or target), also when it comes through the agent.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import paramiko
import pyotp
import pytest
from textual.widgets import Input, Label

from bastionctl.errors import LoginCancelled
from bastionctl.otp import SecretStore, parse_secret
from bastionctl.prompting import Origin, Role, origin_of
from bastionctl.tui.app import BastionApp, create_app
from bastionctl.tui.totp_dialog import TotpDialog
from bastionctl.tui.tunnel_panel import TunnelPanel
from bastionctl.tunnels.client import all_tunnels, open_detached
from bastionctl.tunnels.protocol import TunnelRequest, TunnelState
from tests.lab.helpers import run_cli
from tests.ssh.helpers import CLI_TIMEOUT, echo_roundtrip, wait_for
from tests.ssh.loopback import Loopback, close_quietly
from tests.ssh.server import SshServer, UserRule
from tests.ssh.services import free_port
from tests.ssh.world import BASTION, World
from tests.tui.pilot import log_text, ready, until

# OSC 52 (clipboard), OSC 0 ending in ST, markup that would close nothing and bind a click to
# a file write, then the 8-bit CSI and OSC forms.
HOSTILE = "\x1b]52;c;cHduZWQ=\x07\x1b]0;pwned\x1b\\[/] [@click=app.screenshot()] \x9b2J\x9d0;c1\x9c"
SHOWN = "[/] [@click=app.screenshot()]"  # what is left of it, as plain text
BANNER = f"Welcome to the bastion {HOSTILE}\r\nAuthorized use only.\r\n"
VERSION = f"SSH-2.0-OpenSSH_9.6 {HOSTILE}"  # a comment after the version: allowed
BAD_BYTES = (b"\x1b", b"\x07")
BAD_CHARS = ("\x1b", "\x07", "\x9b", "\x9d", "\x9c")
TARGET_SECRET = pyotp.random_base32()


def assert_clean(data: bytes) -> None:
    """No ESC or BEL byte, and no C1 control (as a character: 0x9b, 0x9d are UTF-8 bytes of
    ordinary characters too) in what a process wrote."""
    for bad in BAD_BYTES:
        assert bad not in data, data
    text = data.decode("utf-8")
    for char in BAD_CHARS:
        assert char not in text, text


class HostileSshServer(SshServer):
    """An SshServer that also sends `version` (its identification line) when set."""

    version: str | None = None

    def _serve(self, transport: paramiko.Transport) -> None:
        if self.version is not None:
            transport.local_version = self.version
        super()._serve(transport)


class NotSsh(Loopback):
    """Answers every connection with `lines` (no SSH), reads what comes, then hangs up."""

    def __init__(self, lines: str) -> None:
        super().__init__("notssh")
        self.lines = lines.encode()
        self.connections = 0
        self._socks: list[socket.socket] = []

    def _accepted(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self._socks.append(sock)
        self._spawn(self._talk, "talk", sock)

    def _talk(self, sock: socket.socket) -> None:
        try:
            sock.sendall(self.lines)
            sock.settimeout(5)
            while sock.recv(4096):
                pass
        except OSError:
            pass
        finally:
            close_quietly(sock)

    def _close_open(self) -> None:
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            close_quietly(sock)


# The identification phase of a server that is no SSH server: lines before the version (the
# protocol allows them), then a version line that paramiko quotes in its error.
NOT_SSH_LINES = f"{HOSTILE} hello\r\nSSH-[/]\x1b]52;c;SGk=\x07-x\r\n"


@dataclass
class Setup:
    """A bastion and a target of our own, with the world's keys, users and services."""

    world: World
    bastion: HostileSshServer
    target: HostileSshServer
    config: Path
    servers: list[SshServer] = field(default_factory=list)

    def target_code(self) -> str:
        return str(pyotp.TOTP(TARGET_SECRET).now())


def config_text(world: World, bastion_port: int, target_port: int, known_hosts: Path) -> str:
    return f"""[settings]
known_hosts = ["{known_hosts}"]
connect_timeout = 5
keepalive_interval = 1

[bastions.{BASTION}]
ipv4 = "127.0.0.1"
port = {bastion_port}
user = "bulk"
identity_file = "{world.identity_files[BASTION]}"
otp_single_use = false

[hosts.server-02]
ipv4 = "127.0.0.1"
port = {target_port}
user = "bulk"
identity_file = "{world.identity_files["server-02"]}"
bastion = "{BASTION}"
platform = "linux"
services = ["echo"]

[services.echo]
port = {world.service_port("echo")}
local_port = {free_port()}
"""


@pytest.fixture
def hostile(ssh_world: World, tmp_path: Path, isolated_dirs: Path) -> Iterator[Setup]:
    """server-01 (the world's bulk user: key + TOTP) and server-02 (key only; tests may add a
    TOTP step) as hostile servers, the config for them in tmp_path; no secret stored."""
    target = HostileSshServer("server-02", {"bulk": UserRule([ssh_world.client_keys["server-02"]])})
    target.start()
    target_address = ("127.0.0.1", target.port)

    def forward(host: str, port: int) -> tuple[str, int] | None:
        return target_address if (host, port) == target_address else None

    bastion = HostileSshServer(BASTION, dict(ssh_world.bastion.users), forward=forward)
    bastion.start()
    known_hosts = tmp_path / "hostile.known_hosts"
    known_hosts.write_text(f"{bastion.known_hosts_line()}\n{target.known_hosts_line()}\n")
    config = tmp_path / "hostile.toml"
    config.write_text(config_text(ssh_world, bastion.port, target.port, known_hosts))
    try:
        yield Setup(ssh_world, bastion, target, config, [bastion, target])
    finally:
        for server in (bastion, target):
            server.stop()


# --- the command line ----------------------------------------------------------------------


TUNNEL = ("tunnel", "echo", "server-02")


@dataclass
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes


def run_tunnel(config: Path, option: str, stdin: bytes, echo: bool = True) -> Run:
    """`bastionctl OPTION --config CONFIG tunnel echo server-02` until it is ready (an echo
    through it), then SIGTERM; everything it wrote, as bytes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastionctl", option, "--config", str(config), *TUNNEL],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(stdin)
    proc.stdin.close()
    out = bytearray()
    err = bytearray()
    readers = [
        threading.Thread(target=pump, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        ready = wait_for(lambda: b"connect with:" in out or proc.poll() is not None, 30)
        if ready and echo and proc.poll() is None:
            port = int(bytes(out).split(b"connect with: 127.0.0.1:")[1].split(b"\n")[0])
            echo_roundtrip(port)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for reader in readers:
            reader.join(5)
        proc.stdout.close()
        proc.stderr.close()
    return Run(proc.returncode, bytes(out), bytes(err))


def pump(stream: BinaryIO, into: bytearray) -> None:
    """Everything `stream` gives, into `into` as it comes."""
    while chunk := stream.read1(65536):  # type: ignore[attr-defined]
        into.extend(chunk)


@pytest.mark.parametrize("option", ["-v", "--debug"])
def test_a_hostile_bastion_reaches_no_terminal_raw(hostile: Setup, option: str) -> None:
    hostile.bastion.banner = BANNER
    hostile.bastion.version = VERSION
    hostile.bastion.prompt = f"{HOSTILE}Verification code: \x1b[8m"
    # No secret stored: the prompt is shown (on stderr, no terminal here), the code read.
    run = run_tunnel(hostile.config, option, f"{hostile.world.totp_code('bulk')}\n".encode())
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    assert b"Tunnel closed." in run.stdout
    assert_clean(run.stdout)
    assert_clean(run.stderr)
    stderr = run.stderr.decode()
    assert f"server-01: {SHOWN} Verification code: (reading standard input)" in stderr
    if option == "--debug":
        # paramiko logged what the server sent: shown, sanitised.
        assert f"Remote version/idstring: SSH-2.0-OpenSSH_9.6 {SHOWN}" in stderr
        assert "Auth banner: " in stderr


@pytest.mark.parametrize("option", ["-v", "--debug"])
def test_a_server_that_is_no_ssh_server_reaches_no_terminal_raw(
    hostile: Setup, option: str, tmp_path: Path
) -> None:
    with NotSsh(NOT_SSH_LINES) as fake:
        config = tmp_path / "notssh.toml"
        config.write_text(
            hostile.config.read_text().replace(
                f"port = {hostile.bastion.port}\n", f"port = {fake.port}\n"
            )
        )
        run = run_tunnel(config, option, b"", echo=False)
    assert run.returncode == 1
    assert run.stdout == b""
    assert_clean(run.stderr)
    stderr = run.stderr.decode()
    last = stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("bastionctl: error: SSH handshake with bastion server-01 at ")
    assert last.endswith("failed: Incompatible version ([/] instead of 2.0)")
    if option == "--debug":
        assert f"Banner: {SHOWN}" in stderr  # paramiko's debug line, sanitised
        assert "Traceback (most recent call last):" in stderr


# --- the TUI ---------------------------------------------------------------------------------


def dialog_shown(tui: BastionApp) -> bool:
    """A TotpDialog on top, with its widgets composed (pushing it comes first)."""
    return isinstance(tui.screen, TotpDialog) and bool(tui.screen.query("#totp-input"))


async def answer_dialog(pilot: object, tui: BastionApp, title: str, code: str) -> TotpDialog:
    await until(pilot, lambda: dialog_shown(tui), 20)
    dialog = tui.screen
    assert isinstance(dialog, TotpDialog)
    assert str(dialog.query_one(".dialog-title", Label).render()) == title
    dialog.query_one("#totp-input", Input).value = code
    await pilot.press("enter")  # type: ignore[attr-defined]
    await until(pilot, lambda: tui.screen is not dialog, 10)
    return dialog


async def test_the_tui_shows_hostile_text_as_plain_text_and_says_which_host_asks(
    hostile: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="paramiko")  # paramiko's lines reach the session log
    hostile.bastion.banner = BANNER
    # No space: the whole software version is quoted in paramiko's INFO line "Connected (...)".
    hostile.bastion.version = f"SSH-2.0-OpenSSH_9.6{HOSTILE.replace(' ', '')}"
    hostile.bastion.prompt = f"[@click=app.screenshot()] [/] Verification code: {HOSTILE}"
    # The target asks too (key, then a TOTP code of its own), in its own words.
    hostile.target.users["bulk"] = UserRule(
        [hostile.world.client_keys["server-02"]], totp_secret=TARGET_SECRET, rate_limit=None
    )
    hostile.target.prompt = f"{HOSTILE}Verification code: "
    screenshots: list[object] = []
    tui = create_app(hostile.config, watch_others=False, check_dns=False)
    tui.action_screenshot = lambda *args, **kwargs: screenshots.append(args)  # type: ignore[method-assign]
    async with tui.run_test(size=(130, 40)) as pilot:
        await ready(pilot, tui)
        tui.open_tunnel("server-02", "echo")
        await until(pilot, lambda: dialog_shown(tui), 20)
        bastion_dialog = tui.screen
        assert isinstance(bastion_dialog, TotpDialog)
        prompt = bastion_dialog.query_one("#totp-prompt", Label)
        assert str(prompt.render()) == f"[@click=app.screenshot()] [/] Verification code: {SHOWN}"
        await pilot.click(prompt, offset=(1, 0))  # markup would bind a click here to an action
        await pilot.click(prompt, offset=(27, 0))
        await answer_dialog(
            pilot, tui, "server-01 (bastion) asks:", hostile.world.totp_code("bulk")
        )
        target_dialog = await answer_dialog(
            pilot, tui, "server-02 (target) asks:", hostile.target_code()
        )
        assert target_dialog.prompt_text == f"{SHOWN} Verification code:"
        await until(pilot, lambda: any("is up" in n.message for n in tui._notifications), 20)
        await pilot.pause(0.5)  # the log drains every 0.2 s
        logged = " ".join(log_text(tui).split())  # the panel wraps long lines
        assert tui.is_running
    assert screenshots == []
    assert "Connected (version 2.0, client OpenSSH_9.6[/][@click=app.screenshot()])" in logged
    assert "Auth banner" in logged
    assert not any(char in logged for char in BAD_CHARS)
    assert hostile.target.logins(user="bulk") == 1


def detached(config: Path) -> None:
    opened = run_cli(
        "--config", str(config), "tunnel", "echo", "server-02", "--detach", timeout=CLI_TIMEOUT
    )
    assert opened.returncode == 0, opened.stderr


async def test_an_agent_tunnel_whose_last_error_quotes_a_hostile_server(
    ssh_world: World, fault_bastion: object
) -> None:
    """A real path to a last_error with markup: the agent's tunnel loses its bastion and the
    server it then reaches sends a version line that paramiko quotes in its error."""
    proxy = fault_bastion.proxy  # type: ignore[attr-defined]
    config: Path = fault_bastion.config  # type: ignore[attr-defined]
    await asyncio.to_thread(detached, config)
    with NotSsh(NOT_SSH_LINES) as fake:
        proxy.upstream = ("127.0.0.1", fake.port)
        proxy.cut()

        def failing() -> bool:
            tunnels = all_tunnels()
            return bool(tunnels) and "Incompatible version" in (tunnels[0].last_error or "")

        assert await asyncio.to_thread(wait_for, failing, 20, 0.1)
        [info] = await asyncio.to_thread(all_tunnels)
        assert info.state is TunnelState.RECONNECTING
        assert info.last_error is not None and "([/] instead of 2.0)" in info.last_error
        tui = create_app(config, check_dns=False)
        async with tui.run_test(size=(160, 40)) as pilot:
            await ready(pilot, tui)
            panel = tui.query_one(TunnelPanel)
            await until(pilot, lambda: panel.row_count == 1, 10)
            await pilot.pause(2.5)  # a few refreshes of the panel
            row = [str(cell) for cell in panel.get_row_at(0)]
            assert tui.is_running
        assert "([/] instead of 2.0)" in row[9]
        listed = await asyncio.to_thread(run_cli, "tunnel", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert "([/] instead of 2.0)" in json.loads(listed.stdout)["tunnels"][0]["last_error"]
        assert fake.connections >= 1


# --- through the agent -----------------------------------------------------------------------


@pytest.mark.usefixtures("agent")
def test_a_question_through_the_agent_says_which_server_asks(hostile: Setup) -> None:
    SecretStore().set(BASTION, parse_secret(hostile.world.secret("bulk")))
    hostile.target.users["bulk"] = UserRule(
        [hostile.world.client_keys["server-02"]], totp_secret=TARGET_SECRET, rate_limit=None
    )
    hostile.target.prompt = f"{HOSTILE}Verification code: \x1b[2J"
    asked: list[tuple[str, bool]] = []

    def ask(prompt: str, echo: bool) -> str:
        asked.append((prompt, echo))
        if origin_of(prompt) is None:
            raise LoginCancelled("not a server's question")
        return hostile.target_code()

    request = TunnelRequest("server-02", "echo", config=str(hostile.config))
    info = open_detached(request, ask, lambda _text: None)
    assert info.state is TunnelState.UP
    [(prompt, echo)] = asked  # the bastion's code came from the keyring
    assert origin_of(prompt) == Origin("server-02", Role.TARGET, f"{SHOWN} Verification code:")
    assert prompt == f"server-02: {SHOWN} Verification code:" and echo is False
    echo_roundtrip(info.local_port)
