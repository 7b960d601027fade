"""SSH_ASKPASS for plain OpenSSH: TOTP prompts of known bastions answered from the keyring.

OpenSSH shows keyboard-interactive prompts as "(user@host) Verification code: ". Only a TOTP
prompt of a known form (otp.looks_like_totp_prompt: exactly that, or the config's
`[settings] totp_prompt` regex matching the whole prompt) for a bastion of the inventory with a
stored secret gets its code, never one already used in this step (it waits for the next).
A yes/no question (OpenSSH's host-key question) is never answered with a code: it is shown
whole on the terminal and the answer typed with echo; anything else (a password, a
passphrase) is asked there without echo. Without a terminal nothing is answered.

On Linux and macOS `bastionctl ssh` points SSH_ASKPASS at a small shell script running this
interpreter. Windows OpenSSH runs SSH_ASKPASS as a program, so there it points at the
installed `bastionctl` program (Scripts\\bastionctl.exe) with BASTIONCTL_ASKPASS=1 and
BASTIONCTL_CONFIG in ssh's environment: `bastionctl.cli.main`, given those and one prompt
argument, answers as `bastionctl askpass PROMPT`. Secrets are never on argv or in the
environment; the code goes to stdout only.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

from bastionctl import paths, sanitise
from bastionctl.config import Config, Settings
from bastionctl.errors import BastionctlError
from bastionctl.model import Bastion
from bastionctl.otp import (
    SecretStore,
    TotpSource,
    UsedSteps,
    is_yes_no_question,
    looks_like_totp_prompt,
)
from bastionctl.system import api
from bastionctl.system.files import open_private_log, private_dir, runtime_dir
from bastionctl.system.terminal import ask_hidden, ask_terminal

PREFIX = re.compile(r"^\((?P<user>[^@()\s]+)@(?P<host>[^()\s]+)\)\s*")
# OpenSSH (8.4+) sets this for a question that wants a yes or no (ssh-agent's confirmation).
PROMPT_KIND_ENV = "SSH_ASKPASS_PROMPT"
# Set in ssh's environment on Windows: `bastionctl PROMPT` then acts as `bastionctl askpass`
# (bastionctl.cli.main reads it; the name is repeated there, where this module is not loaded).
ASKPASS_ENV = "BASTIONCTL_ASKPASS"


def find_bastion(config: Config, prompt: str) -> Bastion | None:
    bastions = list(config.inventory.bastions.values())
    match = PREFIX.match(prompt)
    if match is None:
        return bastions[0] if len(bastions) == 1 else None
    host = match.group("host").strip("[]")
    for bastion in bastions:
        names = {bastion.alias, bastion.fqdn, bastion.ipv6, bastion.ipv4, bastion.connect_host}
        if host in names and match.group("user") == bastion.user:
            return bastion
    return None


def _record(kind: str) -> None:
    """One line per call (never the prompt's answer), so people can see what ssh asked."""
    log = paths.state_dir() / "askpass.log"
    private_dir(log.parent)
    with os.fdopen(open_private_log(log), "a", encoding="utf-8") as handle:
        handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {kind}\n")


def _notify(message: str) -> None:
    sys.stderr.write(f"bastionctl: {message}\n")


def is_confirmation(prompt: str) -> bool:
    """A question answered yes or no, never with a secret: shown with echo."""
    return is_yes_no_question(prompt) or os.environ.get(PROMPT_KIND_ENV) == "confirm"


def answer(config: Config, prompt: str) -> str | None:
    """The answer to print, or None when nobody can answer."""
    text = sanitise.prompt(prompt)
    if is_confirmation(text):
        _record("terminal yes/no")
        return ask_terminal(text, echo=True)
    if looks_like_totp_prompt(text, config.settings.totp_prompt):
        bastion = find_bastion(config, text)
        secret = SecretStore().get(bastion.alias) if bastion else None
        if bastion is not None and secret is not None:
            _record(f"totp {bastion.alias}")
            source = TotpSource(
                bastion.alias,
                secret,
                UsedSteps(),
                bastion.otp_single_use,
                _notify,
            )
            return source.next_code()
    _record("terminal")
    return ask_hidden(text)


def plain_ssh_environment(
    ssh_config_text: str, settings: Settings, config_path: Path | None
) -> tuple[Path, dict[str, str]]:
    """Write the ssh config (and on POSIX this askpass helper) for `bastionctl ssh`; ssh's
    environment.

    Both files live in the private runtime directory; the helper runs this interpreter, so
    it answers with the same config and keyring. On Windows the helper is the installed
    `bastionctl` program itself (see the module's docstring).
    """
    from bastionctl.atomic import write_atomic
    from bastionctl.render.ssh_config import control_dir

    run_dir = runtime_dir()
    config_file = run_dir / "ssh_config"
    write_atomic(config_file, ssh_config_text, mode=0o600)
    if api.family() == "windows":
        return config_file, console_script_environment(config_path)
    control = control_dir(settings)
    if control is not None:
        control.mkdir(mode=0o700, parents=True, exist_ok=True)
    return config_file, _script_environment(run_dir, config_path)


def _script_environment(run_dir: Path, config_path: Path | None) -> dict[str, str]:
    """Linux, macOS: SSH_ASKPASS is a shell script that runs `python -m bastionctl askpass`."""
    import shlex

    from bastionctl.atomic import write_atomic

    helper = run_dir / "askpass"
    config_args = f" --config {shlex.quote(str(config_path))}" if config_path else ""
    write_atomic(
        helper,
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m bastionctl{config_args} askpass "$@"\n',
        mode=0o700,
    )
    return {**os.environ, "SSH_ASKPASS": str(helper), "SSH_ASKPASS_REQUIRE": "force"}


def console_script_environment(config_path: Path | None) -> dict[str, str]:
    """Windows: SSH_ASKPASS is the `bastionctl` program, told by the environment to answer."""
    env = {
        **os.environ,
        "SSH_ASKPASS": str(console_script()),
        "SSH_ASKPASS_REQUIRE": "force",
        ASKPASS_ENV: "1",
    }
    if config_path is not None:
        env[paths.CONFIG_ENV] = str(config_path.absolute())
    # OpenSSH before 8.4 (Windows 10 ships 8.1) knows no SSH_ASKPASS_REQUIRE and runs
    # SSH_ASKPASS only when DISPLAY is set; ssh forwards no X11 unless asked (ForwardX11).
    env.setdefault("DISPLAY", "localhost:0")
    return env


def _script_dirs() -> list[Path]:
    """Where pip and pipx put this installation's programs: next to the interpreter (a venv),
    the scheme's scripts directory, the user scheme's."""
    import contextlib
    import sysconfig

    dirs = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    with contextlib.suppress(KeyError, ValueError):
        dirs.append(Path(sysconfig.get_path("scripts", sysconfig.get_preferred_scheme("user"))))
    return dirs


def console_script() -> Path:
    """The installed `bastionctl` program (bastionctl.exe on Windows) for ssh to run."""
    import shutil

    name = "bastionctl.exe" if sys.platform == "win32" else "bastionctl"
    for directory in _script_dirs():
        candidate = directory / name
        if candidate.is_file():
            return candidate
    found = shutil.which("bastionctl")
    if found:
        return Path(found)
    raise BastionctlError(
        f"ssh needs the bastionctl program ({name}) as its askpass helper, and there is none "
        f"next to {sys.executable} or on PATH",
        "install bastionctl with pip or pipx (pip install bastionctl / pipx install bastionctl)",
    )
