"""SSH_ASKPASS on Windows: the installed `bastionctl` program, told by its environment to answer
ssh's prompt, run as a real process the way ssh runs it (in the win32 view on Linux)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from bastionctl import askpass, cli
from bastionctl.config import load_config
from bastionctl.errors import BastionctlError
from bastionctl.system import api

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
PROMPT = "(op@bastion.example.com) Verification code: "
CONFIG = """\
[bastions.b]
fqdn = "bastion.example.com"
user = "op"
identity_file = "~/.ssh/id_ed25519"

[hosts.h]
ipv6 = "2001:db8::2"
user = "u"
"""
SCRIPTS = Path(sys.executable).parent  # this venv's bin/ (Scripts\ on Windows)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "bastionctl.toml"
    # ssh puts control sockets under the passwd home, not $HOME: keep them in tmp_path.
    path.write_text(f'[settings]\ncontrol_path = "{tmp_path}/cm/%C"\n\n' + CONFIG)
    stored = subprocess.run(
        [sys.executable, "-m", "bastionctl", "--config", str(path), "otp", "set", "b"],
        input=SECRET + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stored.returncode == 0, stored.stderr
    return path


@pytest.fixture
def win32_view(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(api.VIEW_SETTING, "win32")
    api.view.cache_clear()
    api.has.cache_clear()
    yield
    monkeypatch.delenv(api.VIEW_SETTING)
    api.view.cache_clear()
    api.has.cache_clear()


def test_the_console_script_answers_sshs_prompt_with_the_current_code(
    config: Path, win32_view: None, isolated_dirs: Path
) -> None:
    assert api.family() == "windows"
    settings = load_config(config).settings
    config_file, env = askpass.plain_ssh_environment("# test\n", settings, config)
    # What ssh gets: the program to run and the environment that makes it the helper.
    assert env["SSH_ASKPASS"] == str(SCRIPTS / "bastionctl")
    assert env["SSH_ASKPASS_REQUIRE"] == "force"
    assert env[askpass.ASKPASS_ENV] == "1"
    assert env["BASTIONCTL_CONFIG"] == str(config)
    assert env[api.VIEW_SETTING] == "win32"
    assert not any(SECRET in value for value in env.values())
    assert not (config_file.parent / "askpass").exists()  # no shell script on Windows
    assert config_file.read_text() == "# test\n"
    assert cli.ASKPASS_ENV == askpass.ASKPASS_ENV

    # As ssh runs it: the program, one argument (the prompt), no stdin, its environment.
    started = time.time()
    answered = subprocess.run(
        [env["SSH_ASKPASS"], PROMPT],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    done = time.time()
    assert answered.returncode == 0, answered.stderr
    totp = pyotp.TOTP(SECRET)
    codes = {totp.at(started), totp.at(done)}  # the step may turn while it runs
    assert answered.stdout in {f"{code}\n" for code in codes}  # the code, nothing else
    log = (isolated_dirs / "state" / "bastionctl" / "askpass.log").read_text().splitlines()
    assert len(log) == 1 and log[0].endswith(" totp b")


def test_askpass_mode_needs_exactly_one_argument_that_is_no_option(
    monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    monkeypatch.setenv(cli.ASKPASS_ENV, "1")
    assert cli.askpass_args([PROMPT]) == ["askpass", "--", PROMPT]
    assert cli.askpass_args(["--version"]) == ["--version"]
    assert cli.askpass_args(["otp", "code"]) == ["otp", "code"]
    assert cli.askpass_args([]) == []
    monkeypatch.setenv(cli.ASKPASS_ENV, "0")
    assert cli.askpass_args([PROMPT]) == [PROMPT]
    monkeypatch.delenv(cli.ASKPASS_ENV)
    assert cli.askpass_args([PROMPT]) == [PROMPT]
    # The real program: an option is the normal CLI even in askpass mode.
    version = subprocess.run(
        [str(SCRIPTS / "bastionctl"), "--version"],
        env={**os.environ, cli.ASKPASS_ENV: "1", "BASTIONCTL_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.returncode == 0 and version.stdout.startswith("bastionctl, version")


def test_no_installed_program_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, win32_view: None
) -> None:
    monkeypatch.setattr(askpass, "_script_dirs", lambda: [tmp_path])
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BastionctlError) as raised:
        askpass.console_script_environment(None)
    assert "no" in str(raised.value) and "askpass helper" in str(raised.value)
    assert "pip" in (raised.value.hint or "") and "pipx" in (raised.value.hint or "")


def test_posix_keeps_the_script_helper(config: Path) -> None:
    assert api.family() != "windows"
    settings = load_config(config).settings
    config_file, env = askpass.plain_ssh_environment("# test\n", settings, config)
    helper = config_file.parent / "askpass"
    assert env["SSH_ASKPASS"] == str(helper)
    assert helper.read_text().startswith("#!/bin/sh\nexec ")
    assert askpass.ASKPASS_ENV not in env
