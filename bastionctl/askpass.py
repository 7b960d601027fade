"""SSH_ASKPASS for plain OpenSSH: TOTP prompts of known bastions answered from the keyring.

OpenSSH shows keyboard-interactive prompts as "(user@host) Verification code: ". A TOTP
prompt for a bastion of the inventory with a stored secret gets its code, never one already
used in this step (it waits for the next); anything else is asked on the terminal.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

from bastionctl import paths
from bastionctl.config import Config, Settings
from bastionctl.model import Bastion
from bastionctl.otp import SecretStore, TotpSource, UsedSteps, looks_like_totp_prompt
from bastionctl.ssh.auth import sanitise_prompt

PREFIX = re.compile(r"^\((?P<user>[^@()\s]+)@(?P<host>[^()\s]+)\)\s*")


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
    paths.private_dir(log.parent)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {kind}\n")
    log.chmod(0o600)


def _notify(message: str) -> None:
    sys.stderr.write(f"bastionctl: {message}\n")


def answer(config: Config, prompt: str) -> str | None:
    """The answer to print, or None when nobody can answer."""
    text = sanitise_prompt(prompt)
    if looks_like_totp_prompt(text):
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
    return _ask_terminal(text)


def _ask_terminal(prompt: str) -> str | None:
    try:
        tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return None
    import termios

    with os.fdopen(tty, "r+b", buffering=0) as handle:
        old = termios.tcgetattr(tty)
        new = list(old)
        new[3] &= ~termios.ECHO
        handle.write(prompt.encode() + (b"" if prompt.endswith(" ") else b" "))
        try:
            termios.tcsetattr(tty, termios.TCSAFLUSH, new)
            line = handle.readline().decode(errors="replace")
        finally:
            termios.tcsetattr(tty, termios.TCSAFLUSH, old)
            handle.write(b"\n")
    return line.rstrip("\r\n")


def plain_ssh_environment(
    ssh_config_text: str, settings: Settings, config_path: Path | None
) -> tuple[Path, dict[str, str]]:
    """Write the ssh config and this askpass helper for `bastionctl ssh`; ssh's environment.

    Both files live in the private runtime directory; the helper runs this interpreter, so
    it answers with the same config and keyring.
    """
    import shlex

    from bastionctl.atomic import write_atomic
    from bastionctl.render.ssh_config import control_dir

    run_dir = paths.private_dir(paths.runtime_dir())
    config_file = run_dir / "ssh_config"
    write_atomic(config_file, ssh_config_text, mode=0o600)
    helper = run_dir / "askpass"
    config_args = f" --config {shlex.quote(str(config_path))}" if config_path else ""
    write_atomic(
        helper,
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m bastionctl{config_args} askpass "$@"\n',
        mode=0o700,
    )
    control_dir(settings).mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {**os.environ, "SSH_ASKPASS": str(helper), "SSH_ASKPASS_REQUIRE": "force"}
    return config_file, env
