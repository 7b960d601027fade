"""The user's home as ssh sees it, and the user's id where there are user ids."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bastionctl.system import api


def user_id() -> int | None:
    """This process's user id; None where the OS has none (Windows)."""
    if sys.platform != "win32" and api.has("getuid"):
        return os.getuid()
    return None


def ssh_home() -> Path:
    """The home directory ssh itself uses: the passwd entry's on POSIX (not $HOME, which a
    shell may have changed), the profile directory on Windows."""
    if sys.platform != "win32" and api.has("pwd") and api.has("getuid"):
        import pwd

        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    return Path.home()


def ssh_dir() -> Path:
    """Where the user's ssh config and known_hosts live (~/.ssh, %USERPROFILE%\\.ssh)."""
    return Path.home() / ".ssh"
