"""Asking the person: who asks (a login's question names its server), and the terminal for the
CLI front end."""

from __future__ import annotations

import enum
import getpass
import re
import sys
from dataclasses import dataclass

from bastionctl import sanitise
from bastionctl.errors import AuthError

# As otp.YES_NO_RE (a layer above): OpenSSH's host-key question and bastionctl's end so.
_YES_NO = re.compile(r"\(yes/no(?:/\[fingerprint\])?\)\? *\Z")


class Role(enum.StrEnum):
    BASTION = "bastion"
    TARGET = "target"


@dataclass(frozen=True)
class Origin:
    """The server that asks a login's question, and its own words (sanitised)."""

    host: str
    role: Role
    prompt: str

    def clean(self) -> Origin:
        """The same, sanitised again (as it arrived from another process)."""
        return Origin(sanitise.line(self.host), self.role, sanitise.prompt(self.prompt))


class Question(str):
    """A server's question as every front end can show it, "ALIAS: PROMPT", that also says
    which server asks (`origin`).

    A str, so an asker taking (prompt, echo) works unchanged; a front end that can say more
    (the TUI's dialog: "server-02 (target) asks:") reads `origin`. It crosses the control
    protocol as Prompt.origin.
    """

    origin: Origin

    def __new__(cls, origin: Origin) -> Question:
        question = super().__new__(cls, f"{origin.host}: {origin.prompt}")
        question.origin = origin
        return question


def origin_of(prompt: str) -> Origin | None:
    """Who asks `prompt`, when a server does; None for bastionctl's own questions (a key's
    passphrase)."""
    return prompt.origin if isinstance(prompt, Question) else None


def terminal_ask(prompt: str, echo: bool) -> str:
    """Ask on the terminal without echo; without one, read a line from standard input."""
    prompt = sanitise.prompt(prompt)
    shown = prompt if prompt.endswith(" ") else prompt + " "
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            return input(shown) if echo else getpass.getpass(shown)
        except EOFError:
            raise AuthError(f"no answer to {prompt!r}: input closed") from None
    if _YES_NO.search(prompt):
        # A decision (a host key to trust) is a person's, never a line piped in.
        raise AuthError("a yes/no question and no terminal to ask it on")
    sys.stderr.write(shown + "(reading standard input)\n")
    sys.stderr.flush()
    line = sys.stdin.readline() if sys.stdin is not None else ""
    if not line:
        raise AuthError(
            f"the server asked {prompt!r} and there is no terminal or input to answer from",
            "store the TOTP secret with `bastionctl otp set BASTION`, or run in a terminal",
        )
    return line.rstrip("\r\n")


def read_secret_input(prompt: str) -> str:
    """A secret from the terminal without echo, or all of standard input when piped."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.read()
