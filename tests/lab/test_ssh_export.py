"""Plain OpenSSH through the 2FA bastion with the exported config and `bastionctl askpass`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bastionctl.lab import LabInfo
from bastionctl.system import api

from .helpers import LogWatch, run_cli

pytestmark = pytest.mark.lab


def test_real_ssh_through_the_bastion_one_totp_for_three_runs(
    lab: LabInfo, bulk_config: Path, isolated_dirs: Path
) -> None:
    env = {**os.environ, "HOME": str(isolated_dirs)}
    control = Path(tempfile.mkdtemp(prefix="bcl-cm-"))  # short: socket paths are limited
    bulk_config.write_text(
        bulk_config.read_text().replace(
            "[settings]\n", f'[settings]\ncontrol_path = "{control}/%C"\n'
        )
    )
    watch = LogWatch(lab.bastion_sshd_log)
    outputs = []
    try:
        for host in ("server-02", "server-03", "server-02"):
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bastionctl",
                    "--config",
                    str(bulk_config),
                    "ssh",
                    host,
                    "-o",
                    "BatchMode=no",
                    "echo",
                    f"hello-from-{host}",
                ],
                capture_output=True,
                text=True,
                timeout=90,
                env=env,
                stdin=subprocess.DEVNULL,
            )
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout.strip())
    finally:
        config = isolated_dirs / "run" / "bastionctl" / "ssh_config"
        check = subprocess.run(
            ["ssh", "-F", str(config), "-O", "check", "server-01"],
            capture_output=True,
            text=True,
            env=env,
        )
        if "pid=" in check.stderr:
            master = int(check.stderr.split("pid=")[1].split(")")[0])
            os.kill(master, signal.SIGTERM)  # the ControlMaster this test started
        shutil.rmtree(control, ignore_errors=True)
    assert outputs == ["hello-from-server-02", "hello-from-server-03", "hello-from-server-02"]
    time.sleep(0.3)
    totp_logins = sum("Accepted keyboard-interactive" in line for line in watch.lines())
    assert totp_logins == 1  # the 2nd and 3rd ssh rode the bastion's ControlMaster
    calls = (isolated_dirs / "state" / "bastionctl" / "askpass.log").read_text().splitlines()
    assert len(calls) == 1 and calls[0].endswith("totp server-01")


def test_exported_config_is_accepted_by_ssh_dash_g(
    lab: LabInfo, bulk_config: Path, tmp_path: Path
) -> None:
    result = run_cli("--config", str(bulk_config), "ssh-config")
    assert result.returncode == 0, result.stderr
    exported = tmp_path / "exported"
    exported.write_text(result.stdout)
    for alias, host in lab.hosts.items():
        resolved = subprocess.run(
            ["ssh", "-G", "-F", str(exported), alias], capture_output=True, text=True, check=True
        ).stdout
        options = dict(line.split(" ", 1) for line in resolved.splitlines() if " " in line)
        assert options["hostname"] == host.ipv6
        assert options["user"] == lab.bulk_user
        assert options["proxyjump"] == "server-01"


def test_windows_view_ssh_through_the_bastion_with_the_console_script_askpass(
    lab: LabInfo, bulk_config: Path, isolated_dirs: Path
) -> None:
    """As on Windows: no ControlMaster in the config, SSH_ASKPASS is the `bastionctl` program
    (BASTIONCTL_ASKPASS=1), and `bastionctl ssh` waits for ssh instead of exec'ing it."""
    env = {**os.environ, "HOME": str(isolated_dirs), api.VIEW_SETTING: "win32"}
    exported = run_cli("--config", str(bulk_config), "ssh-config", env=env)
    assert exported.returncode == 0, exported.stderr
    assert "ControlMaster" not in exported.stdout.replace("no ControlMaster:", "")
    assert "ControlPath" not in exported.stdout and "ControlPersist" not in exported.stdout
    assert exported.stdout.count("    ServerAliveInterval ") == 1 + len(lab.hosts)
    watch = LogWatch(lab.bastion_sshd_log)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bastionctl",
            "--config",
            str(bulk_config),
            "ssh",
            "server-02",
            "-o",
            "BatchMode=no",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    run_dir = isolated_dirs / "run" / "bastionctl"
    assert (run_dir / "ssh_config").read_text() == exported.stdout
    assert not (run_dir / "askpass").exists()  # the POSIX helper script was not used
    calls = (isolated_dirs / "state" / "bastionctl" / "askpass.log").read_text().splitlines()
    assert len(calls) == 1 and calls[0].endswith("totp server-01")
    time.sleep(0.3)
    assert sum("Accepted keyboard-interactive" in line for line in watch.lines()) == 1
