"""The core never imports Textual: checked in a fresh interpreter per core module."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import bastionctl

CORE = sorted(
    m.name
    for m in pkgutil.walk_packages(bastionctl.__path__, "bastionctl.")
    if not m.name.startswith(("bastionctl.tui", "bastionctl.__main__"))
)


def test_core_modules_found() -> None:
    assert (
        "bastionctl.tunnels.manager" in CORE
        and "bastionctl.lab" in CORE
        and "bastionctl.cli" in CORE
    )


def test_no_core_module_imports_textual() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module(name)\n"
        "    bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "    if bad:\n"
        "        raise SystemExit(f'{name} imported {bad[0]}')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout


def loaded_after(statement: str, modules: tuple[str, ...]) -> str:
    """Which of `modules` a fresh interpreter holds after `statement`, comma-separated."""
    code = (
        "import sys\n"
        f"{statement}\n"
        f"print(','.join(m for m in {modules!r} if sys.modules.get(m) is not None))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_cli_help_does_not_import_ssh_libraries() -> None:
    heavy = ("paramiko", "boto3", "textual", "keyring")
    assert loaded_after("from bastionctl import cli", heavy) == ""


def test_the_ssh_core_does_not_import_invoke() -> None:
    statement = "import bastionctl.tunnels.manager, bastionctl.ssh.connect"
    assert loaded_after(statement, ("invoke", "asyncio", "yaml")) == ""


def test_tunnel_detach_list_and_stop_do_not_import_paramiko() -> None:
    """What `tunnel --detach`, `tunnel list` and `tunnel stop` load in the CLI process; the
    agent, forked or started, imports paramiko itself."""
    statement = (
        "import bastionctl.cli, bastionctl.tunnels.client, bastionctl.tunnels.launch,"
        " bastionctl.tunnels.spec, bastionctl.tunnels.protocol, bastionctl.prompting"
    )
    assert loaded_after(statement, ("paramiko", "textual", "boto3")) == ""


def test_a_foreground_tunnel_attached_to_the_agent_does_not_import_paramiko() -> None:
    """The command of a foreground tunnel holds it in the agent: the agent logs in, so the
    command never loads paramiko (`--standalone` and its fallback do, late)."""
    statement = "import bastionctl.cli, bastionctl.tunnels.attached, bastionctl.tunnels.holding"
    assert loaded_after(statement, ("paramiko", "textual", "boto3")) == ""
