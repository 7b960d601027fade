"""Which prompts `bastionctl askpass` answers with a code: only TOTP prompts of a known form.

OpenSSH's host-key question ("... Are you sure you want to continue connecting
(yes/no/[fingerprint])? ") is shown whole on the terminal, typed with echo, and refused when
there is no terminal; never answered with a code, whatever name the host has.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyotp
import pytest

from bastionctl import askpass
from bastionctl.config import Config, load_config
from bastionctl.errors import ConfigError
from bastionctl.otp import SecretStore, parse_secret

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
TOTP_PROMPT = "(op@bastion.example.com) Verification code: "
HOST_KEY_QUESTION = (
    "The authenticity of host 'token-db.corp.example (2001:db8::5)' can't be established.\n"
    "ED25519 key fingerprint is SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU.\n"
    "This key is not known by any other names.\n"
    "Are you sure you want to continue connecting (yes/no/[fingerprint])? "
)
CONFIG = """\
[bastions.b]
fqdn = "bastion.example.com"
user = "op"
identity_file = "~/.ssh/id_ed25519"
otp_single_use = false  # several codes per test: no waiting for the next step

[hosts.token-db]
fqdn = "token-db.corp.example"
user = "u"
bastion = "b"
"""


def write_config(tmp_path: Path, settings: str = "") -> Path:
    path = tmp_path / "bastionctl.toml"
    # ssh puts control sockets under the passwd home, not $HOME: keep them in tmp_path.
    path.write_text(f'[settings]\ncontrol_path = "{tmp_path}/cm/%C"\n{settings}\n' + CONFIG)
    return path


@pytest.fixture
def config_path(tmp_path: Path, isolated_dirs: Path) -> Path:
    SecretStore().set("b", parse_secret(SECRET))
    return write_config(tmp_path)


class Terminal:
    """Stands in for the terminal: notes what was shown and how; `reply` None = no terminal."""

    def __init__(self, reply: str | None) -> None:
        self.reply = reply
        self.asked: list[tuple[str, bool]] = []

    def ask(self, prompt: str, *, echo: bool) -> str | None:
        self.asked.append((prompt, echo))
        return self.reply


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Terminal:
    term = Terminal(None)
    monkeypatch.setattr(askpass, "ask_terminal", term.ask)
    monkeypatch.setattr(askpass, "ask_hidden", lambda prompt: term.ask(prompt, echo=False))
    monkeypatch.delenv(askpass.PROMPT_KIND_ENV, raising=False)
    return term


def codes_now() -> set[str]:
    totp = pyotp.TOTP(SECRET)
    now = time.time()
    return {totp.at(now - 1), totp.at(now), totp.at(now + 1)}


def log_lines(isolated_dirs: Path) -> list[str]:
    log = isolated_dirs / "state" / "bastionctl" / "askpass.log"
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()]


def test_the_host_key_question_is_shown_whole_with_echo_never_answered_with_a_code(
    config_path: Path, terminal: Terminal, isolated_dirs: Path
) -> None:
    config = load_config(config_path)
    assert askpass.answer(config, HOST_KEY_QUESTION) is None  # no terminal: refused
    terminal.reply = "yes"
    assert askpass.answer(config, HOST_KEY_QUESTION) == "yes"
    shown = HOST_KEY_QUESTION.rstrip()
    assert terminal.asked == [(shown, True), (shown, True)]  # whole, its four lines
    assert log_lines(isolated_dirs) == ["terminal yes/no", "terminal yes/no"]


def test_openssh_totp_prompt_is_answered_from_the_keyring(
    config_path: Path, terminal: Terminal, isolated_dirs: Path
) -> None:
    config = load_config(config_path)
    for prompt in (TOTP_PROMPT, TOTP_PROMPT.rstrip(), "Verification code: "):
        assert askpass.answer(config, prompt) in codes_now()
    assert terminal.asked == []
    assert log_lines(isolated_dirs) == ["totp b"] * 3


@pytest.mark.parametrize(
    "prompt",
    [
        "(op@token-db.corp.example) Password: ",
        "Enter passphrase for key '/home/op/.ssh/token_ed25519': ",
        "(op@bastion.example.com) Your 2FA token: ",
        "(op@bastion.example.com) MFA one-time passcode: ",
        "(op@bastion.example.com) Verification code: (again)",
    ],
)
def test_other_prompts_go_to_the_terminal_hidden(
    config_path: Path, terminal: Terminal, prompt: str
) -> None:
    assert askpass.answer(load_config(config_path), prompt) is None
    assert terminal.asked == [(prompt.strip(), False)]


def test_a_hostile_prompt_reaches_the_terminal_sanitised(
    config_path: Path, terminal: Terminal
) -> None:
    prompt = "\x1b]52;c;cHduZWQ=\x07Password for \x1b[2Jtoken-db:\x9b31m "
    assert askpass.answer(load_config(config_path), prompt) is None
    assert terminal.asked == [("Password for token-db:", False)]


def test_ssh_agent_confirmations_are_asked_with_echo(
    config_path: Path, terminal: Terminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(askpass.PROMPT_KIND_ENV, "confirm")
    terminal.reply = "yes"
    prompt = "Allow use of key /home/op/.ssh/id_ed25519?\nKey fingerprint SHA256:abc."
    assert askpass.answer(load_config(config_path), prompt) == "yes"
    assert terminal.asked == [(prompt, True)]


def test_the_configured_regex_adds_a_prompt_form(
    tmp_path: Path, isolated_dirs: Path, terminal: Terminal
) -> None:
    SecretStore().set("b", parse_secret(SECRET))
    config = load_config(write_config(tmp_path, 'totp_prompt = "Enter (PASSCODE|token):"'))
    assert config.settings.totp_prompt == "Enter (PASSCODE|token):"
    assert askpass.answer(config, "(op@bastion.example.com) Enter PASSCODE: ") in codes_now()
    assert askpass.answer(config, TOTP_PROMPT) in codes_now()  # the built-in form still
    # Anchored (matched whole): more around it is not the prompt configured.
    assert askpass.answer(config, "(op@bastion.example.com) Enter token: or else") is None
    assert terminal.asked == [("(op@bastion.example.com) Enter token: or else", False)]


def test_even_a_match_everything_regex_never_answers_a_yes_no_question(
    tmp_path: Path, isolated_dirs: Path, terminal: Terminal
) -> None:
    SecretStore().set("b", parse_secret(SECRET))
    config: Config = load_config(write_config(tmp_path, "totp_prompt = '(?s).*'"))
    assert askpass.answer(config, "(op@bastion.example.com) Anything: ") in codes_now()
    assert askpass.answer(config, HOST_KEY_QUESTION) is None
    assert terminal.asked == [(HOST_KEY_QUESTION.rstrip(), True)]


def test_the_configured_regex_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"totp_prompt.*must be a regular expression"):
        load_config(write_config(tmp_path, 'totp_prompt = "Enter (code:"'))
    with pytest.raises(ConfigError, match="totp_prompt"):
        load_config(write_config(tmp_path, "totp_prompt = 5"))


def run_askpass(config: Path, prompt: str) -> subprocess.CompletedProcess[bytes]:
    """`bastionctl askpass PROMPT` as ssh runs it, here with no terminal at all: a new session
    (no controlling terminal, so no /dev/tty) and no stdin."""
    return subprocess.run(
        [sys.executable, "-m", "bastionctl", "--config", str(config), "askpass", prompt],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        start_new_session=True,
        env=os.environ.copy(),
    )


def test_the_askpass_command_without_a_terminal(config_path: Path, isolated_dirs: Path) -> None:
    refused = run_askpass(config_path, HOST_KEY_QUESTION)
    assert refused.returncode != 0
    assert refused.stdout == b""  # no code, nothing at all
    assert b"cannot answer" in refused.stderr and b"no terminal" in refused.stderr
    hostile = run_askpass(config_path, "\x1b]0;pwned\x07Continue (yes/no)? \x1b[2J")
    assert hostile.returncode != 0 and hostile.stdout == b""
    assert b"\x1b" not in hostile.stderr and b"\x07" not in hostile.stderr
    answered = run_askpass(config_path, TOTP_PROMPT)
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.decode().rstrip("\n") in codes_now()
    assert log_lines(isolated_dirs) == ["terminal yes/no", "terminal yes/no", "totp b"]
