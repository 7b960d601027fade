"""The TUI against the real lab: tunnels opened from it carry bytes, the TOTP dialog logs in."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pyotp
import pytest
from textual.widgets import Input

from bastionctl.lab import LabInfo
from bastionctl.tui.app import BastionApp, create_app
from bastionctl.tui.quit_dialog import QuitDialog
from bastionctl.tui.totp_dialog import TotpDialog
from bastionctl.tui.tunnel_panel import TunnelPanel
from tests.conftest import VIEWS
from tests.tui import pilot as pilot_helpers
from tests.tui.pilot import log_text, ready

from .helpers import mysql_login, run_cli, write_config

pytestmark = pytest.mark.lab


def until(pilot: Any, check: Any, timeout: float = 30) -> Any:
    return pilot_helpers.until(pilot, check, timeout)


async def select(pilot: Any, tui: BastionApp, alias: str) -> None:
    await pilot.press("slash")
    tui.query_one("#filter", Input).value = alias
    await pilot.pause()
    await pilot.press("enter")


async def open_from(pilot: Any, tui: BastionApp, alias: str, key: str, count: int = 1) -> Any:
    """Select `alias`, press `key`, wait for the `count`th tunnel to be up; return the newest."""
    await select(pilot, tui, alias)
    await pilot.press(key)
    await until(pilot, lambda: len(up(tui)) == count)
    return up(tui)[-1]


def up(tui: BastionApp) -> list[Any]:
    assert tui.manager is not None
    return [t for t in tui.manager.list() if t.state.value == "up"]


def echo(port: int, size: int) -> bytes:
    data = bytes(range(256)) * (size // 256)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
    assert got == data
    return got


def panel_row(tui: BastionApp) -> list[str]:
    panel = tui.query_one(TunnelPanel)
    return [str(cell) for cell in panel.get_row_at(0)]


async def test_rdp_tunnel_from_the_tui_counts_bytes_and_stops(
    lab: LabInfo, bulk_config: Path
) -> None:
    tui = create_app(bulk_config, watch_others=False, check_dns=False)
    async with tui.run_test(size=(130, 40)) as pilot:
        await ready(pilot, tui)
        tunnel = await open_from(pilot, tui, "server-04", "r")
        await asyncio.to_thread(echo, tunnel.local_port, 256 * 1024)
        await pilot.pause(1.3)  # the panel refreshes every second
        row = panel_row(tui)
        assert row[1:3] == ["rdp", "server-04"] and row[4] == "up"
        assert row[6] == "256.0 KB" and row[7] == "256.0 KB", row
        assert tui.manager is not None and tui.manager.bastion_logins("server-01") == 1
        tui.query_one(TunnelPanel).focus()
        await pilot.press("c")  # OSC 52: the terminal's clipboard
        assert tui.clipboard == f"127.0.0.1:{tunnel.local_port}"
        if shutil.which("xfreerdp") is None:
            await pilot.press("o")
            await until(
                pilot, lambda: any("not installed" in n.message for n in tui._notifications)
            )
            assert up(tui), "a missing client leaves the tunnel up"
        # A second tunnel through the same bastion costs no login.
        await pilot.press("s")
        await until(pilot, lambda: len(up(tui)) == 2)
        assert tui.manager.bastion_logins("server-01") == 1
        tui.query_one(TunnelPanel).focus()
        await pilot.press("x")
        await until(pilot, lambda: len(tui.manager.list()) == 1)  # type: ignore[union-attr]
        await pilot.press("q")
        await until(pilot, lambda: isinstance(tui.screen, QuitDialog))
        await pilot.press("y")
        await until(pilot, lambda: tui.return_code is not None)
    assert tui.manager.list() == []


async def test_mysql_and_raw_port_tunnels_from_the_tui(lab: LabInfo, bulk_config: Path) -> None:
    import pymysql

    tui = create_app(bulk_config, watch_others=False, check_dns=False)
    async with tui.run_test(size=(130, 40)) as pilot:
        await ready(pilot, tui)
        port = (await open_from(pilot, tui, "server-02", "m")).local_port

        def query() -> Any:
            connection = pymysql.connect(
                host="127.0.0.1",
                port=port,
                **mysql_login(lab),
                database=lab.mysql_database,
                connect_timeout=10,
            )
            with connection, connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                return cursor.fetchone()

        assert await asyncio.to_thread(query) == (1,)
        if shutil.which("mysql"):
            # A terminal client cannot share the headless test terminal: the app says so.
            tui.query_one(TunnelPanel).focus()
            await pilot.press("o")
            await until(
                pilot, lambda: any("needs this terminal" in n.message for n in tui._notifications)
            )
        await select(pilot, tui, "server-04")
        await pilot.press("p")
        await until(pilot, lambda: bool(tui.screen.query("#dialog-input")))
        tui.screen.query_one("#dialog-input", Input).value = "1433"
        await pilot.press("enter")
        await until(pilot, lambda: len(up(tui)) == 2)
        raw = next(t for t in up(tui) if t.spec.service is None)
        assert raw.spec.remote_port == 1433
        await asyncio.to_thread(echo, raw.local_port, 4096)
        assert tui.manager is not None
        tui.manager.close_all()


async def test_totp_dialog_logs_in_with_a_typed_code_and_esc_cancels(
    lab: LabInfo, tmp_path: Path
) -> None:
    config = write_config(lab, tmp_path / "bulk.toml", bulk=True)  # no secret in the keyring
    tui = create_app(config, watch_others=False, check_dns=False)
    async with tui.run_test(size=(130, 40)) as pilot:
        await ready(pilot, tui)
        await select(pilot, tui, "server-04")
        await pilot.press("r")
        await until(
            pilot,
            lambda: isinstance(tui.screen, TotpDialog) and bool(tui.screen.query("#totp-input")),
        )
        assert "Verification code" in tui.screen.prompt_text  # type: ignore[attr-defined]
        await pilot.press("escape")
        await until(pilot, lambda: any("cancelled" in n.message for n in tui._notifications))
        assert tui.manager is not None and tui.manager.list() == []
        # The tunnel ends `closed` (a decision), not `failed`.
        await until(pilot, lambda: "closed: login cancelled" in log_text(tui))
        assert "failed: login cancelled" not in log_text(tui)
        await pilot.pause(1.0)
        assert not isinstance(tui.screen, TotpDialog), "a cancelled login is not retried"

        await pilot.press("r")
        await until(
            pilot,
            lambda: isinstance(tui.screen, TotpDialog) and bool(tui.screen.query("#totp-input")),
        )
        code = pyotp.TOTP(lab.read_secret(bulk=True)).now()
        await pilot.press(*code, "enter")
        await until(pilot, lambda: up(tui))
        await asyncio.to_thread(echo, up(tui)[0].local_port, 4096)
        tui.manager.close_all()


async def test_detached_tunnels_of_other_processes_show_and_stop(
    lab: LabInfo, bulk_config: Path
) -> None:
    opened = run_cli("--config", str(bulk_config), "tunnel", "mssql", "server-04", "--detach")
    assert opened.returncode == 0, opened.stderr
    tui = create_app(bulk_config, check_dns=False)
    async with tui.run_test(size=(130, 40)) as pilot:
        await ready(pilot, tui)
        panel = tui.query_one(TunnelPanel)
        await until(pilot, lambda: panel.row_count == 1)
        assert panel_row(tui)[1:3] == ["mssql", "server-04"]
        panel.focus()
        await pilot.press("x")
        await until(pilot, lambda: panel.row_count == 0)
    listed = run_cli("tunnel", "list", "--json")
    assert listed.returncode == 0 and "server-04" not in listed.stdout


@VIEWS
async def test_quit_can_leave_tunnels_running_in_the_agent(
    lab: LabInfo, bulk_config: Path, platform_view: str
) -> None:
    tui = create_app(bulk_config, watch_others=False, check_dns=False)
    async with tui.run_test(size=(130, 40)) as pilot:
        await ready(pilot, tui)
        port = (await open_from(pilot, tui, "server-04", "r")).local_port
        await pilot.press("q")
        await until(pilot, lambda: isinstance(tui.screen, QuitDialog))
        await pilot.press("d")
        await until(pilot, lambda: tui.return_code is not None)
    listed = run_cli("tunnel", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (moved,) = [t for t in json.loads(listed.stdout)["tunnels"] if t["host"] == "server-04"]
    assert moved["process"] == "agent" and moved["local_port"] == port
    await asyncio.to_thread(echo, port, 4096)
    assert run_cli("tunnel", "stop", "--all").returncode == 0
