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

from bastionctl import paths
from bastionctl.config import Config
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
