"""Reading a line from the person at the controlling terminal, with or without echo; the
signals that end a command holding a terminal."""

from __future__ import annotations

import getpass
import os
import signal
import sys

from bastionctl.system import api


def hangup_signal() -> int | None:
    """The signal a command gets when its terminal goes away (SIGHUP), where there is one."""
    if sys.platform != "win32" and api.has("SIGHUP"):
        return int(signal.SIGHUP)
    return None


def ask_hidden(prompt: str) -> str | None:
    """A line typed at the terminal without echo (a secret), even when stdin is not the
    terminal (as for an SSH_ASKPASS helper); None when there is no terminal."""
    return ask_terminal(prompt, echo=False)


def ask_terminal(prompt: str, *, echo: bool) -> str | None:
    """A line typed at the terminal, shown as typed when `echo` (an answer to a yes/no
    question) or not (a secret); None when there is no terminal. `prompt` is written as given:
    the caller sanitises it."""
    shown = prompt if prompt.endswith(" ") else prompt + " "
    if sys.platform != "win32" and api.has("termios"):
        return _ask_tty(shown, echo)
    # Windows: getpass reads the console itself (msvcrt), whatever stdin is.
    if not sys.stdin or not sys.stdin.isatty():
        return None
    try:
        return input(shown) if echo else getpass.getpass(shown)
    except (EOFError, OSError):
        return None


def _ask_tty(shown: str, echo: bool) -> str | None:
    if sys.platform == "win32":
        return None
    import termios

    try:
        tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return None
    with os.fdopen(tty, "r+b", buffering=0) as handle:
        old = termios.tcgetattr(tty)
        new = list(old)
        if not echo:
            new[3] &= ~termios.ECHO
        handle.write(shown.encode())
        try:
            termios.tcsetattr(tty, termios.TCSAFLUSH, new)
            line = handle.readline().decode(errors="replace")
        finally:
            termios.tcsetattr(tty, termios.TCSAFLUSH, old)
            if not echo:
                handle.write(b"\n")  # the Enter the person typed was not shown
    return line.rstrip("\r\n")
