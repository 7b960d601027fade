"""Which OS facilities exist here, asked by capability: the one place that looks.

The rest of bastionctl.system picks an implementation from these answers (a Unix socket or a
loopback channel, fork or a detached child, ...), never from `sys.platform` alone. Code also
tests `sys.platform` next to a capability, but only so that the type checker, run once per
platform (`mypy --platform darwin|win32`), knows which branch a platform can take.

`BASTIONCTL_PLATFORM_VIEW=darwin` or `=win32` (a test aid, read once) takes away what a macOS
or a Windows Python lacks, so the portable implementations run, and are tested, on Linux.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from bastionctl.errors import UsageError

VIEW_SETTING = "BASTIONCTL_PLATFORM_VIEW"
Family = Literal["linux", "darwin", "windows"]

# Each facility bastionctl may use, and how to tell it exists.
_EXISTS: dict[str, Callable[[], bool]] = {
    "fork": lambda: hasattr(os, "fork"),
    "setsid": lambda: hasattr(os, "setsid"),
    "WNOHANG": lambda: hasattr(os, "WNOHANG"),
    "getuid": lambda: hasattr(os, "getuid"),
    "fchmod": lambda: hasattr(os, "fchmod"),
    "O_NOFOLLOW": lambda: hasattr(os, "O_NOFOLLOW"),
    "sched_affinity": lambda: hasattr(os, "sched_getaffinity") and hasattr(os, "sched_setaffinity"),
    "sched_batch": lambda: hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_BATCH"),
    "procfs": lambda: Path("/proc/self/stat").exists(),
    "AF_UNIX": lambda: hasattr(socket, "AF_UNIX"),
    "SO_PEERCRED": lambda: hasattr(socket, "SO_PEERCRED"),
    "LOCAL_PEERCRED": lambda: hasattr(socket, "LOCAL_PEERCRED"),
    "MSG_DONTWAIT": lambda: hasattr(socket, "MSG_DONTWAIT"),
    "DETACHED_PROCESS": lambda: hasattr(subprocess, "DETACHED_PROCESS"),
    "fcntl": lambda: importlib.util.find_spec("fcntl") is not None,
    "msvcrt": lambda: importlib.util.find_spec("msvcrt") is not None,
    "termios": lambda: importlib.util.find_spec("termios") is not None,
    "pwd": lambda: importlib.util.find_spec("pwd") is not None,
    "SIGHUP": lambda: hasattr(signal, "SIGHUP"),
}

# What a macOS or a Windows Python (3.11) lacks of the above.
_LACKING: dict[str, frozenset[str]] = {
    "darwin": frozenset({"SO_PEERCRED", "sched_affinity", "sched_batch", "procfs"}),
    "win32": frozenset(
        {
            "fork",
            "setsid",
            "WNOHANG",
            "getuid",
            "fchmod",
            "O_NOFOLLOW",
            "sched_affinity",
            "sched_batch",
            "procfs",
            "AF_UNIX",
            "SO_PEERCRED",
            "LOCAL_PEERCRED",
            "MSG_DONTWAIT",
            "fcntl",
            "termios",
            "pwd",
            "SIGHUP",
        }
    ),
}


@functools.cache
def view() -> str | None:
    """The platform this process pretends to be, if any (BASTIONCTL_PLATFORM_VIEW)."""
    value = os.environ.get(VIEW_SETTING, "")
    if value not in ("", *_LACKING):
        raise UsageError(f"{VIEW_SETTING}={value} is not one of {', '.join(_LACKING)}")
    return value or None


@functools.cache
def has(facility: str) -> bool:
    """Whether `facility` (a name of _EXISTS) exists here, in this process's view."""
    lacking = _LACKING.get(view() or "", frozenset())
    return facility not in lacking and _EXISTS[facility]()


def dontwait_flag() -> int | None:
    """The flag that makes one send() or recv() return instead of blocking (MSG_DONTWAIT),
    if any."""
    if sys.platform != "win32" and has("MSG_DONTWAIT"):
        return socket.MSG_DONTWAIT
    return None


def family() -> Family:
    """The OS family, for what is a matter of platform rather than API: which client programs
    exist, which OpenSSH flavour reads the exported config."""
    platform = view() or sys.platform
    if platform == "win32":
        return "windows"
    if platform == "darwin":
        return "darwin"
    return "linux"


@functools.cache
def is_wsl() -> bool:
    """Linux under Windows (WSL): Windows programs run through interop."""
    if family() != "linux":
        return False
    if os.environ.get("WSL_DISTRO_NAME"):
        return True
    try:
        return "microsoft" in Path("/proc/sys/kernel/osrelease").read_text().lower()
    except OSError:
        return False
