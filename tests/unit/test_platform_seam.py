"""Every OS difference goes through bastionctl.system: no other module (the Linux-only lab
aside) touches an API that macOS or Windows lacks."""

from __future__ import annotations

import ast
from pathlib import Path

import bastionctl

PACKAGE = Path(bastionctl.__file__).parent
# Modules only some OSes have, and names of os/socket only some OSes have.
MODULES = {"fcntl", "termios", "pwd", "grp", "msvcrt", "winreg", "resource"}
NAMES = {
    ("os", name)
    for name in (
        "fork",
        "forkpty",
        "setsid",
        "getuid",
        "geteuid",
        "getgid",
        "WNOHANG",
        "fchmod",
        "fchown",
        "chown",
        "sched_getaffinity",
        "sched_setaffinity",
        "sched_setscheduler",
        "SCHED_BATCH",
        "O_NOFOLLOW",
    )
} | {("socket", name) for name in ("AF_UNIX", "SO_PEERCRED", "LOCAL_PEERCRED", "MSG_DONTWAIT")}


def offences(source: str) -> list[str]:
    """What `source` imports or names of the OS-specific APIs above."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in MODULES:
                found.append(node.module)
            if node.module in ("os", "socket"):
                found += [
                    f"{node.module}.{a.name}" for a in node.names if (node.module, a.name) in NAMES
                ]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in NAMES
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_nothing_outside_the_seam_uses_what_some_os_lacks() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ("system", "lab"):
            continue
        found += [f"{relative}: {name}" for name in offences(path.read_text())]
    assert found == []


def test_the_check_sees_what_it_looks_for() -> None:
    sample = "import fcntl\nimport os\nfrom socket import AF_UNIX\nos.fork()\nos.getpid()\n"
    assert sorted(offences(sample)) == ["fcntl", "os.fork", "socket.AF_UNIX"]
