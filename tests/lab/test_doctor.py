"""`bastionctl doctor` against the lab: reachability, login, per-host probes from the bastion."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bastionctl.lab import LabInfo, start_sshd, stop_sshd
from tests.dns.unbound import Unbound

from .helpers import run_cli, store_secret, write_config

pytestmark = pytest.mark.lab


def doctor_config(lab: LabInfo, tmp_path: Path, resolver: Unbound) -> Path:
    config = write_config(lab, tmp_path / "doctor.toml", bulk=True)
    text = config.read_text().replace(
        "[settings]\n",
        f'[settings]\ndns_servers = ["{resolver.server}"]\nconnect_timeout = 3\n',
    )
    config.write_text(text)
    store_secret(config, lab.read_secret(bulk=True))
    return config


def doctor(config: Path, *args: str) -> tuple[int, dict[tuple[str, str], dict[str, str]]]:
    result = run_cli("--config", str(config), "doctor", "--json", *args)
    assert result.returncode in (0, 1), result.stderr
    rows = {(c["subject"], c["check"]): c for c in json.loads(result.stdout)}
    return result.returncode, rows


def test_bastion_reachable_over_both_families(
    lab: LabInfo, tmp_path: Path, resolvers: dict[str, Unbound]
) -> None:
    config = doctor_config(lab, tmp_path, resolvers["plain"])
    _code, rows = doctor(config, "server-01")
    for family in ("IPv6", "IPv4"):
        row = rows[("server-01", f"ssh over {family}")]
        assert row["status"] == "ok" and "SSH-2.0-OpenSSH" in row["detail"], row
    assert rows[("server-01", "known_hosts")]["status"] == "ok"
    assert rows[("server-01", "TOTP secret")]["status"] == "ok"
    assert rows[("server-01", "identity file")]["status"] == "ok"
    assert rows[("server-01", "AAAA server-01.lab.bastionctl.test")]["status"] == "ok"


def test_bastion_sshd_stopped_is_a_clear_failure(
    lab: LabInfo, tmp_path: Path, resolvers: dict[str, Unbound]
) -> None:
    config = doctor_config(lab, tmp_path, resolvers["plain"])
    stop_sshd(lab, "server-01")
    try:
        code, rows = doctor(config, "server-01")
    finally:
        start_sshd(lab, "server-01")
    assert code == 1
    row = rows[("server-01", "ssh over IPv6")]
    assert row["status"] == "fail" and "connection refused" in row["detail"]
    assert "sshd running" in row["advice"]


def test_deep_tells_channel_refused_from_timeout(
    lab: LabInfo, tmp_path: Path, resolvers: dict[str, Unbound]
) -> None:
    config = doctor_config(lab, tmp_path, resolvers["plain"])
    srv03 = lab.hosts["server-03"]
    blackhole = [
        "ip",
        "-n",
        srv03.ns,
        "-6",
        "route",
        "add",
        "blackhole",
        f"{lab.bastion_private_ipv6}/128",
    ]
    stop_sshd(lab, "server-04")
    subprocess.run(blackhole, check=True)  # server-03 silently drops its replies to the bastion
    try:
        code, rows = doctor(config, "--deep")
    finally:
        subprocess.run([*blackhole[:5], "del", *blackhole[6:]], check=True)
        start_sshd(lab, "server-04")
    assert code == 1
    assert rows[("server-01", "login")]["status"] == "ok"
    assert rows[("server-01", "clock")]["status"] == "ok"
    ok = rows[("server-02", f"channel to [{lab.hosts['server-02'].ipv6}]:22")]
    assert ok["status"] == "ok" and "SSH-2.0-OpenSSH" in ok["detail"]
    refused = rows[("server-04", f"channel to [{lab.hosts['server-04'].ipv6}]:22")]
    assert refused["status"] == "fail" and refused["detail"].startswith("channel refused")
    dropped = rows[("server-03", f"channel to [{srv03.ipv6}]:22")]
    assert dropped["status"] == "fail" and dropped["detail"].startswith("timeout")
