"""Text from servers, tags and other processes is shown as plain, sanitised text everywhere in
the TUI: never parsed as Rich/Textual markup (a `[/]` would end the app with MarkupError, an
`[@click=...]` would bind a click to an action), never with escape sequences."""

from __future__ import annotations

import io
import time

from rich.console import Console
from rich.text import Text
from textual.widgets import Label, RichLog, Static

from bastionctl.prompting import Origin, Question, Role
from bastionctl.tui.app import BastionApp
from bastionctl.tui.host_details import HostDetails
from bastionctl.tui.input_dialog import InputDialog
from bastionctl.tui.report_screen import ReportScreen
from bastionctl.tui.totp_dialog import TotpDialog
from bastionctl.tui.tunnel_panel import TunnelPanel
from bastionctl.tunnels.protocol import TunnelId, TunnelInfo, TunnelState
from tests.tui.pilot import FIXED_CLOCK, app, log_text, ready, until

HOSTILE = "\x1b]52;c;cHduZWQ=\x07[/] [@click=app.screenshot()] \x1b]0;pwned\x1b\\[b]x\x9b2J"
SHOWN = "[/] [@click=app.screenshot()] [b]x"
ESCAPES = ("\x1b", "\x07", "\x9b")


def hostile_tunnel(**fields: object) -> TunnelInfo:
    values: dict[str, object] = {
        "id": TunnelId(4242, 1),
        "process": "agent",
        "service": "echo",
        "host": "server-02",
        "bastion": "server-01",
        "remote_host": "localhost",
        "remote_port": 7,
        "bind": "127.0.0.1",
        "local_port": 50007,
        "connection": "127.0.0.1:50007",
        "state": TunnelState.RECONNECTING,
        "started": time.time(),
        "bytes_in": 0,
        "bytes_out": 0,
        "connections": 0,
        **fields,
    }
    return TunnelInfo(**values)  # type: ignore[arg-type]


def no_screenshots(tui: BastionApp) -> list[object]:
    taken: list[object] = []
    tui.action_screenshot = lambda *args, **kwargs: taken.append(args)  # type: ignore[method-assign]
    return taken


async def test_another_process_tunnel_with_hostile_texts() -> None:
    tui = app()
    async with tui.run_test(size=(160, 40)) as pilot:
        await ready(pilot, tui)
        tui.others = [
            hostile_tunnel(last_error=f"the target said {HOSTILE}"),
            hostile_tunnel(
                id=TunnelId(4242, 2),
                state=TunnelState.NEEDS_INPUT,
                waiting_for=f"the login to server-01: {HOSTILE}",
            ),
        ]
        panel = tui.query_one(TunnelPanel)
        await until(pilot, lambda: panel.row_count == 2)
        await pilot.pause(1.2)  # the panel is drawn again each second
        rows = [[str(cell) for cell in panel.get_row_at(n)] for n in range(2)]
        assert rows[0][9] == f"the target said {SHOWN}"
        assert rows[1][9] == f"the login to server-01: {SHOWN}"
        assert all(isinstance(cell, Text) for cell in panel.get_row_at(0))
        assert tui.is_running


async def test_notifications_and_the_log_are_plain_text() -> None:
    tui = app()
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        taken = no_screenshots(tui)
        tui.say(f"cannot stop 4242.1: {HOSTILE}", "error")
        await until(pilot, lambda: any("cannot stop" in n.message for n in tui._notifications))
        await pilot.pause(0.3)
        [note] = [n for n in tui._notifications if "cannot stop" in n.message]
        assert note.message == f"cannot stop 4242.1: {SHOWN}" and not note.markup
        logged = log_text(tui)
        assert f"cannot stop 4242.1: {SHOWN}" in logged
        assert not any(c in logged for c in ESCAPES)
        assert isinstance(tui.query_one(RichLog), RichLog) and tui.is_running
    assert taken == []


async def test_host_details_show_dns_answers_as_plain_text() -> None:
    tui = app()
    async with tui.run_test() as pilot:
        await ready(pilot, tui)
        details = tui.query_one(HostDetails)
        await until(pilot, lambda: details.alias is not None)
        assert details.alias is not None
        details.show_dns(details.alias, f"AAAA fail: {HOSTILE}")
        await pilot.pause()
        console = Console(width=200, record=True, file=io.StringIO())
        console.print(details.content)
        shown = console.export_text()
        assert f"DNS         AAAA fail: {SHOWN}" in shown
        assert tui.is_running


async def test_dialogs_and_reports_show_plain_text() -> None:
    tui = app()
    async with tui.run_test(size=(130, 40)) as pilot:
        await ready(pilot, tui)
        taken = no_screenshots(tui)
        tui.push_screen(InputDialog(f"Remote port on {HOSTILE}"))
        await pilot.pause()
        title = tui.screen.query_one(".dialog-title", Label)
        assert str(title.render()) == f"Remote port on {SHOWN}"
        await pilot.click(title, offset=(20, 0))
        await pilot.press("escape")
        tui.push_screen(ReportScreen(f"Doctor: {HOSTILE}", f"sshd answers: {HOSTILE}\nline 2\n"))
        await pilot.pause()
        assert str(tui.screen.query_one(".dialog-title", Label).render()) == f"Doctor: {SHOWN}"
        body = str(tui.screen.query_one("#report-text", Static).content)
        assert body == f"sshd answers: {SHOWN}\nline 2\n"
        await pilot.press("escape")
        question = Question(Origin("server-02", Role.TARGET, f"{HOSTILE} Verification code:"))
        tui.push_screen(TotpDialog(question, clock=lambda: FIXED_CLOCK))
        await pilot.pause()
        assert str(tui.screen.query_one(".dialog-title", Label).render()) == (
            "server-02 (target) asks:"
        )
        prompt = tui.screen.query_one("#totp-prompt", Label)
        assert str(prompt.render()) == f"{SHOWN} Verification code:"
        await pilot.click(prompt, offset=(5, 0))
        await pilot.press("escape")
        assert tui.is_running
    assert taken == []


def test_the_dialog_names_who_asks() -> None:
    bastion = Question(Origin("server-01", Role.BASTION, "Verification code:"))
    assert TotpDialog(bastion).title_text == "server-01 (bastion) asks:"
    assert TotpDialog(bastion).prompt_text == "Verification code:"
    assert str(bastion) == "server-01: Verification code:"  # what plain front ends show
    passphrase = TotpDialog("Passphrase for /home/op/.ssh/id_ed25519:")
    assert passphrase.title_text == "bastionctl asks:"
    given = TotpDialog("x", origin=Origin("server-02", Role.TARGET, "Code:"))
    assert (given.title_text, given.prompt_text) == ("server-02 (target) asks:", "Code:")
