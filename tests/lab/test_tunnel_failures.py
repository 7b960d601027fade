"""Against the lab: a forward to a dead port is told and listed (foreground, agent, TUI), and a
MariaDB client that connects while the login still runs gets the server's greeting."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from pathlib import Path
from typing import Any

import pyotp
import pytest
from textual.widgets import Input

from bastionctl.config import load_config
from bastionctl.lab import LabInfo
from bastionctl.otp import OtpSecret, SecretStore, UsedSteps
from bastionctl.ssh.connect import Session
from bastionctl.tui.app import create_app
from bastionctl.tunnels.manager import ManagedTunnel, TunnelManager
from bastionctl.tunnels.protocol import TunnelRequest, TunnelState
from bastionctl.tunnels.spec import build_spec
from tests.ssh.helpers import wait_for
from tests.tui.pilot import ready

from .helpers import TunnelProcess, free_port, run_cli
from .test_tui_tunnels import panel_row, select, until, up

pytestmark = pytest.mark.lab
DEAD = 5999  # nothing listens there on server-02
REASON = f"nothing listens on localhost:{DEAD} on server-02 (connect failed)"


def refused(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return sock.recv(1) == b""


def listed() -> dict[str, Any]:
    """The one tunnel `tunnel list --json` shows."""
    [entry] = json.loads(run_cli("tunnel", "list", "--json").stdout)["tunnels"]
    return dict(entry)


def test_a_dead_port_is_one_line_in_the_foreground(lab: LabInfo, bulk_config: Path) -> None:
    args = ["--config", str(bulk_config), "tunnel", "port", "server-02", str(DEAD)]
    with TunnelProcess(args) as tunnel:
        assert tunnel.ready, tunnel.stderr_text
        for _ in range(3):
            assert refused(tunnel.local_port())
        assert wait_for(lambda: listed()["errors"] == 3, 10), listed()
        entry = listed()
    lines = tunnel.stderr_text.splitlines()
    assert [line for line in lines if str(DEAD) in line] == [
        f"bastionctl: client connection closed: {REASON}"
    ], lines
    assert "Secsh" not in tunnel.stderr_text and "paramiko" not in tunnel.stderr_text
    assert entry["state"] == "up" and entry["last_error"] == REASON


def test_a_dead_port_of_a_detached_tunnel_is_in_the_list(lab: LabInfo, bulk_config: Path) -> None:
    opened = run_cli(
        "--config", str(bulk_config), "tunnel", "port", "server-02", str(DEAD), "--detach"
    )
    assert opened.returncode == 0, opened.stderr
    match = re.search(r"connect with: 127\.0\.0\.1:(\d+)", opened.stdout)
    assert match, opened.stdout
    assert refused(int(match.group(1)))
    assert wait_for(lambda: listed()["errors"] == 1, 10), listed()
    entry = listed()
    assert entry["state"] == "up" and entry["last_error"] == REASON
    assert isinstance(entry["last_error_at"], float)


async def test_a_dead_port_shows_in_the_tuis_error_column(lab: LabInfo, bulk_config: Path) -> None:
    tui = create_app(bulk_config, watch_others=False, check_dns=False)
    async with tui.run_test(size=(200, 40)) as pilot:
        await ready(pilot, tui)
        await select(pilot, tui, "server-02")
        await pilot.press("p")
        await until(pilot, lambda: bool(tui.screen.query("#dialog-input")))
        tui.screen.query_one("#dialog-input", Input).value = str(DEAD)
        await pilot.press("enter")
        await until(pilot, lambda: len(up(tui)) == 1)
        port = up(tui)[0].local_port
        assert await asyncio.to_thread(refused, port)
        await until(pilot, lambda: panel_row(tui)[-1].endswith(REASON))
        cell = panel_row(tui)[-1]
        assert re.fullmatch(
            r"1 client not served; last error at \d\d:\d\d:\d\d: " + re.escape(REASON), cell
        )
        assert panel_row(tui)[4] == "up"
        assert tui.manager is not None
        tui.manager.close_all()


class NoSecrets(SecretStore):
    """No secret stored: the bastion's code is asked of the (test's) person."""

    def get(self, bastion: str) -> OtpSecret | None:
        return None


def test_a_mariadb_client_connecting_during_the_login_gets_the_greeting(
    lab: LabInfo, tmp_path: Path, bulk_config: Path
) -> None:
    config = load_config(bulk_config)
    connected = threading.Event()
    asked = threading.Event()

    def ask(prompt: str, echo: bool) -> str:
        asked.set()
        # The person types slowly: the client below is already waiting.
        assert connected.wait(30)
        return str(pyotp.TOTP(lab.read_secret(bulk=True)).now())

    session = Session(
        settings=config.settings,
        ask=ask,
        notify=lambda message: None,
        secrets=NoSecrets(),
        used_steps=UsedSteps(tmp_path / "steps.json"),
    )
    port = free_port()
    spec = build_spec(config, TunnelRequest("server-02", "mysql", local_port=port))
    opened: list[ManagedTunnel | BaseException] = []

    def open_it() -> None:
        try:
            opened.append(manager.open(spec, session))
        except BaseException as exc:
            opened.append(exc)

    with TunnelManager(process="foreground") as manager:
        opener = threading.Thread(target=open_it, daemon=True)
        opener.start()
        assert asked.wait(30)
        [tunnel] = manager.list()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as early:
            assert wait_for(lambda: tunnel._held == 1, 5)
            assert tunnel.state is TunnelState.CONNECTING
            connected.set()
            greeting = early.recv(4096)
        opener.join(30)
        assert opened and isinstance(opened[0], ManagedTunnel), opened
        # MariaDB's handshake: protocol version 10, then the server version.
        assert greeting[4] == 10 and b"MariaDB" in greeting, greeting
        assert tunnel.info().errors == 0
