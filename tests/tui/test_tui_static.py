"""Pilot tests of the TUI over a static inventory: filter, details, help, TOTP dialog, quit."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input, RichLog

from bastionctl import sanitise
from bastionctl.tui.app import BastionApp
from bastionctl.tui.help_screen import HelpScreen
from bastionctl.tui.host_details import HostDetails
from bastionctl.tui.host_table import HostTable
from bastionctl.tui.totp_dialog import TotpDialog
from tests.tui.pilot import FIXED_CLOCK, app, ready


def aliases(tui: BastionApp) -> list[str]:
    return [row.alias for row in tui.query_one(HostTable).rows]


async def test_hosts_grouped_by_bastion_and_filtered() -> None:
    tui = app()
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        assert aliases(tui) == ["server-01", "server-02", "server-03"]
        await pilot.press("slash")
        assert tui.focused is tui.query_one("#filter", Input)
        await pilot.press(*"windows")
        assert aliases(tui) == ["server-03"]
        await pilot.press("enter")
        assert tui.focused is tui.query_one(HostTable)
        assert ("alias", "server-03") in tui.query_one(HostDetails).pairs
        tui.query_one("#filter", Input).value = "no-such-host"
        await pilot.pause()
        assert aliases(tui) == []


async def test_details_follow_the_cursor() -> None:
    tui = app()
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        await pilot.press("down", "down")
        assert tui.query_one(HostTable).selected_alias() == "server-03"
        pairs = dict(tui.query_one(HostDetails).pairs)
        assert pairs["IPv6"] == "2001:db8::3" and pairs["platform"] == "windows"
        assert pairs["services"] == "rdp, mssql" and pairs["bastion"] == "server-01"
        await pilot.press("up", "up")
        assert dict(tui.query_one(HostDetails).pairs)["role"] == "bastion"


async def test_help_lists_every_key() -> None:
    tui = app()
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        await pilot.press("question_mark")
        assert isinstance(tui.screen, HelpScreen)
        described = {b.description for b in tui.screen.keys}
        assert described == {b.description for b in BastionApp.BINDINGS}  # type: ignore[union-attr]
        await pilot.press("escape")
        assert not isinstance(tui.screen, HelpScreen)


async def test_quit_without_tunnels_exits_at_once() -> None:
    tui = app()
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        await pilot.press("q")
        await pilot.pause()
    assert tui.return_code == 0


async def test_a_bad_config_is_one_notification_not_a_crash(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[hosts.x]\nplatform = 'beos'\n")
    tui = app(broken)
    async with tui.run_test() as pilot:
        for _ in range(40):
            await pilot.pause(0.05)
            if tui._notifications:
                break
        (note,) = list(tui._notifications)
        assert "hosts.x.platform" in note.message and note.severity == "error"
        assert any("hosts.x.platform" in str(line) for line in tui.query_one(RichLog).lines)


def test_prompts_are_shown_without_control_characters() -> None:
    hostile = "Verification code: \x1b[2J\x1b]0;pwned\x07\x1b[31m"
    assert TotpDialog(hostile).prompt_text == "Verification code:"
    assert TotpDialog("line one\r\nline two\x00").prompt_text == "line one line two"
    assert len(TotpDialog("x" * 5000).prompt_text) == sanitise.LINE_LIMIT


@pytest.mark.parametrize(
    ("keys", "expected"), [(["1", "2", "3", "4", "5", "6", "enter"], "123456"), (["escape"], None)]
)
async def test_totp_dialog_answers_or_cancels(keys: list[str], expected: str | None) -> None:
    tui = app()
    answers: list[str | None] = []
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        tui.push_screen(
            TotpDialog("Verification code: ", clock=lambda: FIXED_CLOCK), answers.append
        )
        await pilot.pause()
        step = str(tui.screen.query_one("#totp-step").render())
        assert "18 s left" in step
        assert tui.screen.query_one(Input).password
        await pilot.press(*keys)
        await pilot.pause()
    assert answers == [expected]


async def test_totp_dialog_says_when_this_step_is_used() -> None:
    tui = app()
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        tui.push_screen(
            TotpDialog("Verification code:", clock=lambda: FIXED_CLOCK, step_used=lambda: True)
        )
        await pilot.pause()
        assert "wait for the next step" in str(tui.screen.query_one("#totp-step").render())


async def test_log_records_go_to_the_panel_not_the_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging

    tui = app()
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        logging.getLogger("paramiko.transport").error("Secsh channel 7 open FAILED")
        await pilot.pause(0.4)
        lines = [str(line.text) for line in tui.query_one(RichLog).lines]
        assert any("Secsh channel 7 open FAILED" in line for line in lines)
    assert "Secsh channel" not in capsys.readouterr().err


async def test_group_by_cycles_bastion_region_role() -> None:
    tui = app()
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        table = tui.query_one(HostTable)
        assert table.columns[1] == "bastion"
        await pilot.press("g")
        assert table.columns[1] == "region" and {r.group for r in table.rows} == {"static"}
        await pilot.press("g")
        assert table.columns[1] == "role"
        assert [r.alias for r in table.rows] == ["server-01", "server-02", "server-03"]
        assert [r.group for r in table.rows] == ["bastion", "host", "host"]
        await pilot.press("g")
        assert table.columns[1] == "bastion"
