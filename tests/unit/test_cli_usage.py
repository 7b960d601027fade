"""Usage errors: one line, exit 2, naming what is valid. Run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "bastionctl" / "templates" / "example.toml"


def bastionctl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastionctl", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=os.environ.copy(),
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["tunnel", "rdp", "server-99"],
            "unknown host 'server-99'; valid hosts: server-02, server-03",
        ),
        (
            ["tunnel", "ftp", "server-02"],
            "unknown service 'ftp'; valid services: mssql, mysql, postgres, rdp",
        ),
        (["tunnel", "rdp", "server-01"], "server-01 is a bastion"),
        (["otp", "status", "nope"], "unknown bastion 'nope'; bastions: server-01"),
    ],
)
def test_usage_errors(args: list[str], needle: str) -> None:
    result = bastionctl("--config", str(EXAMPLE), *args)
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_config_is_exit_2_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[hosts.a]\nuser = "u"\nport = "22"\n')
    result = bastionctl("--config", str(bad), "hosts")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"bastionctl: error: {bad}:3: hosts.a.port: must be an integer from 1 to 65535, got '22'"
    )


def test_click_usage_error_is_exit_2() -> None:
    result = bastionctl("tunnel", "port", "h", "notaport")
    assert result.returncode == 2


def test_hosts_json_and_table() -> None:
    result = bastionctl("--config", str(EXAMPLE), "hosts", "--json")
    assert result.returncode == 0
    import json

    rows = json.loads(result.stdout)
    assert [r["alias"] for r in rows] == ["server-01", "server-02", "server-03"]
    table = bastionctl("--config", str(EXAMPLE), "hosts").stdout
    assert "2001:db8::3" in table and "rdp,mssql" in table


def test_otp_set_reads_stdin_never_argv_and_code_matches() -> None:
    import pyotp

    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    stored = bastionctl("--config", str(EXAMPLE), "otp", "set", "server-01", stdin=secret + "\n")
    assert stored.returncode == 0, stored.stderr
    assert secret not in stored.stdout + stored.stderr
    status = bastionctl("--config", str(EXAMPLE), "otp", "status", "--json")
    assert '"stored": true' in status.stdout and secret not in status.stdout
    code = bastionctl("--config", str(EXAMPLE), "otp", "code", "server-01")
    assert code.stdout.strip() in {
        pyotp.TOTP(secret).now(),
        pyotp.TOTP(secret).at(-30 + __import__("time").time()),
    }
    assert bastionctl("--config", str(EXAMPLE), "otp", "remove", "server-01").returncode == 0
    missing = bastionctl("--config", str(EXAMPLE), "otp", "code", "server-01")
    assert missing.returncode == 1 and "no TOTP secret stored for server-01" in missing.stderr


def test_otp_set_rejects_garbage_without_echoing_it() -> None:
    result = bastionctl("--config", str(EXAMPLE), "otp", "set", "server-01", stdin="hunter2!\n")
    assert result.returncode == 2
    assert "hunter2" not in result.stderr
