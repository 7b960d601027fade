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
        "bastionctl.ssh.manager" in CORE and "bastionctl.lab" in CORE and "bastionctl.cli" in CORE
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


def test_cli_help_does_not_import_ssh_libraries() -> None:
    code = (
        "import sys\n"
        "from bastionctl import cli\n"
        "heavy = [m for m in ('paramiko', 'boto3', 'textual', 'keyring') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_the_ssh_core_does_not_import_invoke() -> None:
    code = (
        "import sys\n"
        "import bastionctl.ssh.manager, bastionctl.ssh.connect\n"
        "loaded = [m for m in ('invoke', 'asyncio', 'yaml') if sys.modules.get(m) is not None]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
