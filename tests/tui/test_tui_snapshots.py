"""SVG snapshots: main screen, TOTP dialog, export diff preview, help (fixed clock and home)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable

from bastionctl.prompting import Origin, Question, Role
from bastionctl.tui.otp_screen import OtpScreen
from bastionctl.tui.quit_dialog import QuitDialog
from bastionctl.tui.report_screen import ReportScreen
from bastionctl.tui.totp_dialog import TotpDialog
from tests.tui.pilot import EXAMPLE, FIXED_CLOCK, app, ready, until

SIZE = (130, 40)
# Paths show on screen (key files, the diff's file names): keep them the same on every machine.
HOME = Path("/tmp/bastionctl-snapshots/home")


@pytest.fixture(autouse=True)
def fixed_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    shutil.rmtree(HOME.parent, ignore_errors=True)
    (HOME / ".ssh").mkdir(parents=True, mode=0o700)
    shutil.copy(EXAMPLE, HOME / "example.toml")
    monkeypatch.setenv("HOME", str(HOME))
    yield HOME / "example.toml"
    shutil.rmtree(HOME.parent, ignore_errors=True)


def test_main_screen(snap_compare: Any, fixed_home: Path) -> None:
    tui = app(fixed_home)

    async def settle(pilot: Any) -> None:
        await ready(pilot, tui)
        await pilot.press("down", "down")

    assert snap_compare(tui, run_before=settle, terminal_size=SIZE)


def test_totp_dialog(snap_compare: Any, fixed_home: Path) -> None:
    tui = app(fixed_home)

    async def ask(pilot: Any) -> None:
        await ready(pilot, tui)
        # As a login relays the bastion's question: the dialog names who asks.
        question = Question(Origin("server-01", Role.BASTION, "Verification code: \x1b[31m"))
        tui.push_screen(TotpDialog(question, clock=lambda: FIXED_CLOCK))
        await pilot.press("1", "2", "3")

    assert snap_compare(tui, run_before=ask, terminal_size=SIZE)


def test_export_diff_preview(snap_compare: Any, fixed_home: Path) -> None:
    (HOME / ".ssh" / "config").write_text("# my own settings\nHost *\n  ServerAliveInterval 30\n")
    tui = app(fixed_home)

    async def export(pilot: Any) -> None:
        await ready(pilot, tui)
        await pilot.press("e")
        await until(pilot, lambda: isinstance(tui.screen, ReportScreen))
        await pilot.pause()

    assert snap_compare(tui, run_before=export, terminal_size=SIZE)


def test_help_screen(snap_compare: Any, fixed_home: Path) -> None:
    tui = app(fixed_home)

    async def show(pilot: Any) -> None:
        await ready(pilot, tui)
        await pilot.press("question_mark")

    assert snap_compare(tui, run_before=show, terminal_size=SIZE)


# --- 80x24: whole sentences in dialogs, never cut ----------------------------------------------

NARROW = (80, 24)


def shown(screen: OtpScreen) -> bool:
    """The problem is on screen and no bastion's cell still says it is being read."""
    table = screen.query_one(DataTable)
    cells = [str(table.get_cell(alias, table.ordered_columns[1].key)) for alias in screen.bastions]
    return bool(screen.query_one("#otp-problem").display) and "…" not in cells


def test_otp_screen_without_a_keyring_backend_at_80_columns(
    snap_compare: Any, fixed_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keyring.core
    from keyring.backends import fail

    # keyring's own "no backend" backend: every read fails as on a machine without one
    # (set on keyring itself: it keeps the backend it chose first for the whole process).
    monkeypatch.setattr(keyring.core, "_keyring_backend", fail.Keyring())
    tui = app(fixed_home)

    async def show(pilot: Any) -> None:
        await ready(pilot, tui)
        await pilot.press("t")
        # Until the status worker finished: it shows the problem first and the table cell after
        # (one CI run took the picture in between).
        await until(pilot, lambda: isinstance(tui.screen, OtpScreen) and shown(tui.screen))
        await pilot.pause()

    assert snap_compare(tui, run_before=show, terminal_size=NARROW)


def test_quit_dialog_at_80_columns(snap_compare: Any, fixed_home: Path) -> None:
    tui = app(fixed_home)

    async def ask(pilot: Any) -> None:
        await ready(pilot, tui)
        tui.push_screen(QuitDialog(2))
        await pilot.pause()

    assert snap_compare(tui, run_before=ask, terminal_size=NARROW)
