"""The TUI's tunnels without root: answering a detached tunnel's login, handing tunnels over."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from textual.widgets import Input

from bastionctl.tui.app import create_app
from bastionctl.tui.quit_dialog import QuitDialog
from bastionctl.tui.totp_dialog import TotpDialog
from bastionctl.tui.tunnel_panel import TunnelPanel
from bastionctl.tunnels.client import all_tunnels
from bastionctl.tunnels.protocol import TunnelState
from tests.lab.helpers import listening, run_cli
from tests.ssh.helpers import PROMPT, echo_roundtrip, wait_for
from tests.ssh.world import World
from tests.tui.pilot import ready, until


async def test_the_tui_answers_a_detached_tunnel_that_waits(
    ssh_world: World, asking_config: Path
) -> None:
    opened = run_cli(
        "--config", str(asking_config), "tunnel", "echo", "server-02", "--detach",
        stdin=ssh_world.totp_code("bulk") + "\n",
    )  # fmt: skip
    assert opened.returncode == 0, opened.stderr
    ssh_world.bastion.drop_connections()
    waiting = await asyncio.to_thread(
        wait_for, lambda: all_tunnels()[0].state is TunnelState.NEEDS_INPUT, 15, 0.05
    )
    assert waiting, "the detached tunnel is not in needs-input within 15 s"
    tui = create_app(asking_config, check_dns=False)
    async with tui.run_test(size=(130, 40)) as pilot:
        await ready(pilot, tui)
        panel = tui.query_one(TunnelPanel)
        await until(pilot, lambda: panel.row_count == 1)
        row = [str(cell) for cell in panel.get_row_at(0)]
        assert row[4] == "needs-input" and PROMPT in row[9]
        panel.focus()
        await pilot.press("a")
        await until(
            pilot,
            lambda: isinstance(tui.screen, TotpDialog) and bool(tui.screen.query("#totp-input")),
        )
        # The agent relays who asks: the dialog names the bastion, then shows its prompt.
        assert tui.screen.title_text == "server-01 (bastion) asks:"  # type: ignore[attr-defined]
        assert tui.screen.prompt_text == "Verification code:"  # type: ignore[attr-defined]
        tui.screen.query_one(Input).value = ssh_world.totp_code("bulk")
        await pilot.press("enter")
        await until(pilot, lambda: any("is up" in n.message for n in tui._notifications), 15)
    [info] = await asyncio.to_thread(all_tunnels)
    assert info.state is TunnelState.UP
    await asyncio.to_thread(echo_roundtrip, info.local_port, os.urandom(64 * 1024))


async def test_quitting_hands_the_tunnels_to_the_agent_on_their_ports(
    ssh_world: World, bulk_config: Path
) -> None:
    tui = create_app(bulk_config, watch_others=False, check_dns=False)
    async with tui.run_test(size=(130, 40)) as pilot:
        await ready(pilot, tui)
        await pilot.press("slash")
        tui.query_one("#filter", Input).value = "server-03"
        await pilot.pause()
        await pilot.press("enter", "p")
        await until(pilot, lambda: bool(tui.screen.query("#dialog-input")))
        echo_port = ssh_world.service_port("echo")
        tui.screen.query_one("#dialog-input", Input).value = str(echo_port)
        await pilot.press("enter")
        assert tui.manager is not None
        await until(pilot, lambda: [t.state for t in tui.manager.list()] == [TunnelState.UP])  # type: ignore[union-attr]
        port = tui.manager.list()[0].local_port
        await pilot.press("q")
        await until(pilot, lambda: isinstance(tui.screen, QuitDialog))
        await pilot.press("d")
        await until(pilot, lambda: tui.return_code is not None, 20)
    [moved] = await asyncio.to_thread(all_tunnels)
    assert moved.process == "agent" and moved.local_port == port
    assert moved.host == "server-03" and moved.remote_port == echo_port
    await asyncio.to_thread(echo_roundtrip, port, os.urandom(64 * 1024))
    stopped = await asyncio.to_thread(run_cli, "tunnel", "stop", "--all")
    assert stopped.returncode == 0, stopped.stderr
    assert not listening(port)
