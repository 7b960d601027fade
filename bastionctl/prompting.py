"""Asking the person at the terminal, for the CLI front end."""

from __future__ import annotations

import getpass
import sys

from bastionctl.errors import AuthError


def terminal_ask(prompt: str, echo: bool) -> str:
    """Ask on the terminal without echo; without one, read a line from standard input."""
    shown = prompt if prompt.endswith(" ") else prompt + " "
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            return input(shown) if echo else getpass.getpass(shown)
        except EOFError:
            raise AuthError(f"no answer to {prompt!r}: input closed") from None
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
