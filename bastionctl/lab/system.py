"""Running commands, in and out of network namespaces, and watching the processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bastionctl.errors import LabError


def run(*cmd: str, check: bool = True, ns: str | None = None) -> str:
    argv = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise LabError(f"`{' '.join(argv)}` failed: {detail[-1] if detail else result.returncode}")
    return result.stdout


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def journal_pids(journal: Path) -> list[int]:
    """Pids recorded in `journal` that still name the process that was started."""
    try:
        lines = journal.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit() and start_time(int(fields[0])) == fields[1]:
            found.append(int(fields[0]))
    return found


def spawn(ns: str, cmd: list[str], log: Path, journal: Path, user: str | None = None) -> int:
    """Start a daemon in `ns`; `ip netns exec` execs, so the pid is the daemon's own.

    The pid goes into `journal` at once, so `lab down` finds it after an interrupted `up`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        "ip",
        "netns",
        "exec",
        ns,
        *(["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"] if user else []),
        *cmd,
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with journal.open("a") as record:
        record.write(f"{proc.pid} {start_time(proc.pid)}\n")
    return proc.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# The lab is made of Linux namespaces. Functions using Linux-only calls start with
# `if sys.platform != "linux": raise LabError(LINUX_ONLY)`, which the type checker, run per
# platform, understands.
LINUX_ONLY = "the lab needs Linux (network namespaces)"


def reap() -> None:
    """Collect exited children so they do not linger as zombies."""
    if sys.platform != "linux":
        raise LabError(LINUX_ONLY)
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop(pid: int, timeout: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after `timeout`; True if the process was running."""
    if sys.platform != "linux":
        raise LabError(LINUX_ONLY)
    if not alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap()
        if not alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    reap()
    return True


def listening_ports(ns: str) -> set[int]:
    """TCP ports in LISTEN inside `ns`, read from /proc (never by connecting)."""
    out = run("cat", "/proc/net/tcp", "/proc/net/tcp6", ns=ns, check=False)
    ports = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and ":" in fields[1]:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def wait_listening(
    ns: str, ports: set[int], pid: int, what: str, log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ports <= listening_ports(ns):
            return
        if not alive(pid):
            raise LabError(f"{what} exited during start-up", f"see {log}")
        time.sleep(0.1)
    raise LabError(f"{what} did not listen on {sorted(ports)} within {timeout:.0f} s", f"see {log}")


def namespaces() -> list[str]:
    return [line.split()[0] for line in run("ip", "netns", "list").splitlines() if line.strip()]


def which(cmd: str) -> str | None:
    """Like `command -v`, also looking in the sbin directories a non-login PATH may lack."""
    return shutil.which(cmd, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found
