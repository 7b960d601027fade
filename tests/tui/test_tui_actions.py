"""Pilot tests of the TUI's other actions: port dialog, export, hosts entries, doctor, OTP."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from bastionctl.otp import SecretStore
from bastionctl.tui.app import BastionApp
from bastionctl.tui.input_dialog import InputDialog
from bastionctl.tui.otp_screen import OtpScreen
from bastionctl.tui.report_screen import ReportScreen
from tests.lab.helpers import free_port
from tests.tui.pilot import EXAMPLE, app, ready, until

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def report_shown(tui: BastionApp) -> bool:
    return isinstance(tui.screen, ReportScreen) and bool(tui.screen.query("#report-text"))


def report_text(tui: BastionApp) -> str:
    return str(tui.screen.query_one("#report-text", Static).content)


async def test_port_dialog_checks_the_port() -> None:
    tui = app()
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        await pilot.press("down", "p")
        assert isinstance(tui.screen, InputDialog)
        await pilot.press(*"99999", "enter")
        assert isinstance(tui.screen, InputDialog)
        assert "1 to 65535" in str(tui.screen.query_one("#dialog-error").render())
        await pilot.press("escape")
        assert not isinstance(tui.screen, InputDialog)


async def test_export_shows_the_diff_and_writes_on_yes(
    isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(isolated_dirs))
    ssh = isolated_dirs / ".ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "config").write_text("# mine\r\nHost old\r\n  User me")  # CRLF, no final newline
    # ssh puts control sockets under the passwd home, not $HOME: keep them in the test's dirs.
    config = isolated_dirs / "example.toml"
    config.write_text(
        EXAMPLE.read_text().replace(
            "[settings]\n", f'[settings]\ncontrol_path = "{isolated_dirs}/cm/%C"\n', 1
        )
    )
    tui = app(config)
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        await pilot.press("e")
        await until(pilot, lambda: report_shown(tui))
        diff = report_text(tui)
        assert "+Host server-03" in diff and "+Include" in diff
        assert not (ssh / "config.d" / "bastionctl.conf").exists(), "nothing before yes"
        await pilot.press("y")
        await until(pilot, lambda: (ssh / "config.d" / "bastionctl.conf").exists())
        await until(
            pilot,
            lambda: "# mine\r\nHost old\r\n  User me" in (ssh / "config").read_bytes().decode(),
        )
        await pilot.press("e")
        await until(pilot, lambda: any("up to date" in n.message for n in tui._notifications))


async def test_bastion_hosts_entries() -> None:
    tui = app()
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        await pilot.press("b")
        await until(pilot, lambda: report_shown(tui))
        assert "2001:db8::3 server-03.example.com server-03" in " ".join(report_text(tui).split())
        await pilot.press("escape")


async def test_doctor_report(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[settings]\ndns_servers = ["127.0.0.1:{free_port()}"]\ndns_timeout = 0.3\n'
        f'connect_timeout = 1\n\n[bastions.jump]\nipv6 = "::1"\nport = {free_port()}\nuser = "u"\n'
        '\n[hosts.web]\nipv6 = "2001:db8::5"\nuser = "u"\n'
    )
    tui = app(config)
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        await pilot.press("d")
        await until(pilot, lambda: report_shown(tui), timeout=20)
        text = report_text(tui)
        assert "jump" in text and "fail" in text, text


async def test_otp_secrets_set_and_remove() -> None:
    tui = app()
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        await pilot.press("t")
        assert isinstance(tui.screen, OtpScreen)
        table = tui.screen.query_one(DataTable)
        await until(pilot, lambda: str(table.get_row_at(0)[1]) == "none")
        await pilot.press("s")
        assert isinstance(tui.screen, InputDialog) and tui.screen.query_one(Input).password
        await pilot.press(*"not base32!", "enter")
        assert "not base32" in str(tui.screen.query_one("#dialog-error").render())
        tui.screen.query_one(Input).value = SECRET
        await pilot.press("enter")
        await until(pilot, lambda: str(table.get_row_at(0)[1]) == "stored")
        assert SecretStore().get("server-01") is not None
        await pilot.press("d")
        await until(pilot, lambda: str(table.get_row_at(0)[1]) == "none")
        assert SecretStore().get("server-01") is None


async def test_command_palette_offers_every_key() -> None:
    tui = app()
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        titles = {c.title for c in tui.get_system_commands(tui.screen)}
        assert {"RDP tunnel", "Export ssh config", "Doctor", "TOTP secrets"} <= titles
