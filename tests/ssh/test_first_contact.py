"""First contact with a host whose key nobody lists (README: Host keys), against the in-process
servers: on a real terminal (tmux) the key is shown and only `yes` or its fingerprint accepts
it, pinned as `accepted` in the managed file; `no`, no terminal or a changed key refuse in one
line. The TUI asks in a dialog."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Static

from bastionctl import paths
from bastionctl.ssh import pinned
from bastionctl.ssh.hostkeys import fingerprint
from bastionctl.tui.app import BastionApp, create_app
from bastionctl.tui.host_key_dialog import HostKeyDialog
from tests.ssh.helpers import CLI_TIMEOUT
from tests.ssh.server import new_ed25519, public_line
from tests.ssh.world import World
from tests.tui.pilot import ready, until

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "(yes/no/[fingerprint])?"
TUNNEL = ("tunnel", "echo", "server-02")


def first_contact_config(world: World, tmp_path: Path) -> Path:
    """The bulk user's config whose known_hosts lists the bastion only, then the managed file;
    the secret stored (the bastion never asks)."""
    own = tmp_path / "own_known_hosts"
    own.write_text(world.bastion.known_hosts_line() + "\n")
    text = world.config_text("bulk", known_hosts=own)
    managed = paths.managed_known_hosts()
    text = re.sub(
        r"^known_hosts = \[(.*)\]$",
        lambda m: f'known_hosts = [{m.group(1)}, "{managed}"]',
        text,
        count=1,
        flags=re.M,
    )
    path = tmp_path / "first.toml"
    path.write_text(text)
    world.store_secret("bulk")
    return path


def target_name(world: World) -> str:
    return f"[127.0.0.1]:{world.targets['server-02'].port}"


class Tmux:
    """One tmux server of this test's own (its socket in tmp_path), running one command."""

    def __init__(self, tmp_path: Path) -> None:
        self.socket = str(tmp_path / "tmux.sock")

    def tmux(self, *args: str) -> str:
        # tmux runs the command with $SHELL, else the passwd shell: CI has no $SHELL and runs
        # these tests as `nobody`, whose shell is nologin (the server exits at once). Bash, as
        # dash does not, goes on after a child that handled Ctrl-C, so EXIT= can be read.
        done = subprocess.run(
            ["tmux", "-S", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "SHELL": "/bin/bash"},
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def run(self, *args: str) -> None:
        command = shlex.join([sys.executable, "-m", "bastionctl", *args])
        # The shell stays, so the screen can be read after bastionctl exits.
        self.tmux(
            "-f", "/dev/null", "new-session", "-d", "-x", "100", "-y", "50", "-c", str(ROOT),
            f"{command}; echo EXIT=$?; sleep 120",
        )  # fmt: skip

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-200")

    def wait_for(self, text: str, timeout: float = CLI_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not on the screen in {timeout} s:\n{self.screen()}")

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-l", line)
        self.tmux("send-keys", "Enter")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=20)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (scripts/setup-env installs it)")
    terminal = Tmux(tmp_path)
    try:
        yield terminal
    finally:
        terminal.close()


def ended(tmux: Tmux) -> tuple[int, str]:
    screen = tmux.wait_for("EXIT=")
    return int(re.search(r"EXIT=(\d+)", screen).group(1)), screen  # type: ignore[union-attr]


@pytest.mark.parametrize("answer", ["yes", "fingerprint"])
def test_yes_or_the_fingerprint_accepts_and_pins_the_key_and_a_second_run_does_not_ask(
    ssh_world: World, tmp_path: Path, isolated_dirs: Path, tmux: Tmux, answer: str
) -> None:
    config = first_contact_config(ssh_world, tmp_path)
    target = ssh_world.targets["server-02"]
    shown = fingerprint(target.host_key)
    tmux.run("--config", str(config), *TUNNEL)
    screen = tmux.wait_for(QUESTION)
    assert f"  host:         server-02\n  address:      {target_name(ssh_world)}\n" in screen
    assert f"  path:         via bastion server-01 (127.0.0.1:{ssh_world.bastion.port})" in screen
    assert f"  key type:     ssh-ed25519\n  fingerprint:  {shown}\n" in screen
    assert "  EC2 attests:  no (not an EC2 instance of the inventory)" in screen
    tmux.type("yes" if answer == "yes" else shown)
    screen = tmux.wait_for("connect with:")
    assert f"accepted the host key {shown} of server-02; pinned in " in screen
    [pin] = pinned.read()
    assert (pin.name, pin.origin, pin.sha256) == (target_name(ssh_world), "accepted", shown)
    assert pin.detail("alias") == "server-02" and pin.detail("via") == "server-01"
    tmux.tmux("send-keys", "C-c")
    assert ended(tmux)[0] == 130
    tmux.close()

    again = Tmux(tmp_path / "again")
    (tmp_path / "again").mkdir()
    try:
        again.run("--config", str(config), *TUNNEL)
        screen = again.wait_for("connect with:")
        assert QUESTION not in screen and "accepted the host key" not in screen
    finally:
        again.close()


@pytest.mark.parametrize("typed", ["no", "Yes", "y", ""])
def test_any_other_answer_refuses_in_one_line_and_pins_nothing(
    ssh_world: World, tmp_path: Path, isolated_dirs: Path, tmux: Tmux, typed: str
) -> None:
    config = first_contact_config(ssh_world, tmp_path)
    shown = fingerprint(ssh_world.targets["server-02"].host_key)
    tmux.run("--config", str(config), *TUNNEL)
    tmux.wait_for(QUESTION)
    tmux.type(typed)
    status, screen = ended(tmux)
    assert status == 1
    echoed, *after = screen[screen.index(QUESTION) + len(QUESTION) :].strip(" ").splitlines()
    assert echoed == typed
    assert [line for line in after if line] == [
        f"bastionctl: error: the host key {shown} of server-02 was not accepted (only `yes` or "
        "the fingerprint accepts it); refusing to connect",
        "EXIT=1",
    ]
    assert pinned.read() == []
    assert "connect with:" not in screen


def test_without_a_terminal_the_key_is_refused_in_one_line(
    ssh_world: World, tmp_path: Path, isolated_dirs: Path
) -> None:
    config = first_contact_config(ssh_world, tmp_path)
    shown = fingerprint(ssh_world.targets["server-02"].host_key)
    done = subprocess.run(
        [sys.executable, "-m", "bastionctl", "--config", str(config), *TUNNEL],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(
        f"bastionctl: error: unknown host key for server-02 ({target_name(ssh_world)}): "
        f"ssh-ed25519 {shown} is not in "
    ), line
    assert line.endswith(
        "; verify its fingerprint with its administrator, or run this on a terminal "
        "(or the TUI) to check and accept it"
    ), line
    assert pinned.read() == []


def test_a_changed_key_is_refused_without_a_question_naming_both_fingerprints(
    ssh_world: World, tmp_path: Path, isolated_dirs: Path, tmux: Tmux
) -> None:
    config = first_contact_config(ssh_world, tmp_path)
    old, _pem = new_ed25519()
    kind, data = public_line(old).split()[:2]
    pin = pinned.pin(target_name(ssh_world), kind, data, pinned.ACCEPTED, "2024-05-01T12:00:00Z")
    managed = pinned.add(pin)
    tmux.run("--config", str(config), *TUNNEL)
    status, screen = ended(tmux)
    assert status == 1
    assert QUESTION not in screen
    offered = fingerprint(ssh_world.targets["server-02"].host_key)
    error = " ".join(screen[: screen.index("EXIT=")].split())  # tmux wraps at 100 columns
    assert (
        f"bastionctl: error: HOST KEY CHANGED for server-02 ({target_name(ssh_world)}): "
        f"known_hosts ({managed}:3, accepted by a person on 2024-05-01T12:00:00Z) has "
        f"{fingerprint(old)}, the server offered {offered}; nothing was sent; if the change is "
        "expected, `bastionctl known-hosts forget server-02` and connect again"
    ) in error
    assert [p.sha256 for p in pinned.read()] == [fingerprint(old)]


async def unblock(pilot: Any, tui: BastionApp) -> None:
    """A failed test must not leave the login thread waiting on a dialog (the app's exit would
    wait for that login)."""
    for _ in range(20):
        if isinstance(tui.screen, HostKeyDialog):
            tui.screen.dismiss(None)
        await pilot.pause(0.1)


async def test_the_tui_asks_in_a_dialog_and_pins_the_key_on_yes(
    ssh_world: World, tmp_path: Path, isolated_dirs: Path
) -> None:
    config = first_contact_config(ssh_world, tmp_path)
    shown = fingerprint(ssh_world.targets["server-02"].host_key)
    tui = create_app(config, watch_others=False, check_dns=False)
    async with tui.run_test(size=(80, 40)) as pilot:
        try:
            await ready(pilot, tui)
            tui.open_tunnel("server-02", "echo")
            await until(pilot, lambda: tui.screen.query("#host-key-question"), 60)
            await pilot.pause()  # laid out
            dialog = tui.screen
            assert isinstance(dialog, HostKeyDialog)
            question = dialog.query_one("#host-key-question", Static)
            rendered = str(question.render())
            assert f"  fingerprint:  {shown}" in rendered.splitlines()
            assert "  path:         via bastion server-01 " in rendered
            # Whole at 80 columns: every line of the question fits the dialog, none wraps.
            assert question.size.width >= max(len(line) for line in rendered.splitlines())
            assert question.size.height == len(rendered.splitlines())
            dialog.query_one("#host-key-input", Input).value = "yes"
            await pilot.press("enter")
            await until(pilot, lambda: any("is up" in n.message for n in tui._notifications), 60)
        finally:
            await unblock(pilot, tui)
    [pin] = pinned.read()
    assert (pin.origin, pin.sha256) == ("accepted", shown)


async def test_the_tui_refuses_the_key_on_escape(
    ssh_world: World, tmp_path: Path, isolated_dirs: Path
) -> None:
    config = first_contact_config(ssh_world, tmp_path)
    tui = create_app(config, watch_others=False, check_dns=False)
    async with tui.run_test(size=(80, 40)) as pilot:
        try:
            await ready(pilot, tui)
            tui.open_tunnel("server-02", "echo")
            await until(pilot, lambda: tui.screen.query("#host-key-input"), 60)
            await pilot.press("escape")
            await until(
                pilot, lambda: any("was not accepted" in n.message for n in tui._notifications), 60
            )
        finally:
            await unblock(pilot, tui)
    assert pinned.read() == []
