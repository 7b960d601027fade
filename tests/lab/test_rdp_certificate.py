"""A Windows instance's RDP certificate thumbprint, as EC2's console output prints it, against
the certificate the lab's real xrdp shows through the tunnel (X.224 negotiation, then TLS).

moto's GetConsoleOutput is patched in-process to print the thumbprint of the lab's xrdp
certificate (or another one); boto3 still talks HTTP to it. win-03 is an EC2 Windows instance
at the lab's server-03 address, so `tunnel rdp win-03` reaches the real xrdp there.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from moto.ec2.responses.general import General

from bastionctl.lab import LabInfo
from bastionctl.tui.app import BastionApp, create_app
from tests.ec2 import test_known_hosts_sync as sync_tests
from tests.ec2 import world
from tests.ec2.conftest import Aws, aws, made, moto_url
from tests.tui.pilot import ready, until

from .ec2_lab import instance_at
from .helpers import TunnelProcess, free_port, run_cli, store_secret

__all__ = ["aws", "made", "moto_url"]

pytestmark = pytest.mark.lab

REGION = "ca-central-1"  # no other test's region in the session's moto server
ALIAS = "win-03"
OTHER = "0123456789ABCDEF0123456789ABCDEF01234567"


@pytest.fixture(autouse=True)
def consoles(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, bool]]:
    monkeypatch.setattr(General, "get_console_output", sync_tests.patched_console_output)
    sync_tests.CONSOLES.clear()
    return sync_tests.CONSOLES


def xrdp_thumbprint(lab: LabInfo) -> str:
    pem = (lab.root / "hosts" / "server-03" / "xrdp-cert.pem").read_text()
    return hashlib.sha1(ssl.PEM_cert_to_DER_cert(pem), usedforsecurity=False).hexdigest().upper()


def windows_instance(moto: str, lab: LabInfo) -> str:
    """win-03: a Windows instance at the lab's server-03 address, behind the lab's bastion."""
    return instance_at(moto, lab, REGION, "server-03", ALIAS, world.WINDOWS_AMI, 78, "t3.medium")


def config_for(lab: LabInfo, aws: Aws, tmp_path: Path) -> Path:
    """The lab's bastion and the EC2 source; the user's own known_hosts lists the bastion's
    and server-03's SSH keys (a Windows console prints none), nothing of RDP."""
    bastion = lab.bastion_alias
    lines = [
        "[settings]",
        "connect_timeout = 10",
        "",
        f"[bastions.{bastion}]",
        f'ipv6 = "{lab.bastion_ipv6}"',
        f'user = "{lab.bulk_user}"',
        f'identity_file = "{lab.client_keys[bastion]}"',
        "otp_single_use = false",
        "",
        "[[ec2]]",
        'profile = "prod"',
        f'regions = ["{REGION}"]',
        f'endpoint_url = "{aws.url}"',
    ]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    own = aws.home / ".ssh" / "known_hosts"
    own.parent.mkdir(parents=True, exist_ok=True)
    known = [line for line in lab.known_hosts.read_text().splitlines() if line.startswith(bastion)]
    pub = lab.root / "hosts" / "server-03" / "ssh_host_ed25519_key.pub"
    kind, data = pub.read_text().split()[:2]
    known.append(f"{lab.hosts['server-03'].ipv6} {kind} {data}")
    own.write_text("\n".join(known) + "\n")
    store_secret(path, lab.read_secret(bulk=True), bastion)
    return path


def synced(config: Path, consoles: dict[str, tuple[str, bool]], instance: str, thumb: str) -> str:
    consoles[instance] = (sync_tests.windows_console(thumb), False)
    result = run_cli("--config", str(config), "known-hosts", "sync")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"RDP certificate thumbprint {thumb} recorded" in result.stdout
    return result.stderr


def rdp_args(config: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(config),
        "tunnel",
        "rdp",
        ALIAS,
        "--local-port",
        str(free_port()),
        *extra,
    ]


def deep_doctor(config: Path) -> dict[str, Any]:
    result = run_cli("--config", str(config), "doctor", ALIAS, "--deep", "--json")
    assert "Traceback" not in result.stderr, result.stderr
    rows = json.loads(result.stdout)
    [row] = [r for r in rows if r["subject"] == ALIAS and r["check"] == "RDP certificate"]
    return dict(row)


@pytest.fixture
def win03(lab: LabInfo, aws: Aws, tmp_path: Path) -> tuple[str, Path, str]:
    """win-03's instance id, a config reaching it, and the thumbprint of the lab's xrdp."""
    assert lab.xrdp_real, "xrdp did not run in the lab; the RDP check needs the real server"
    return windows_instance(aws.url, lab), config_for(lab, aws, tmp_path), xrdp_thumbprint(lab)


def test_the_certificate_xrdp_shows_through_the_tunnel_is_the_one_ec2_attests(
    win03: tuple[str, Path, str], tmp_path: Path, consoles: dict[str, tuple[str, bool]]
) -> None:
    instance, config, real = win03
    synced(config, consoles, instance, real)

    rdp_file = tmp_path / "win-03.rdp"
    with TunnelProcess(rdp_args(config, "--rdp-file", str(rdp_file))) as up:
        assert up.ready, (up.stdout_lines, up.stderr_text)
    said = "".join(up.stdout_lines)
    assert (
        f"RDP certificate: thumbprint {real}, as EC2 attests (EC2 console output of {instance}"
        in said
    )
    assert rdp_file.exists()
    assert "warning" not in up.stderr_text, up.stderr_text

    row = deep_doctor(config)
    assert row["status"] == "ok", row
    assert f"thumbprint {real}, as EC2 attests" in str(row["detail"])


def test_another_thumbprint_refuses_the_tunnel_in_one_line_and_doctor_fails(
    win03: tuple[str, Path, str], tmp_path: Path, consoles: dict[str, tuple[str, bool]]
) -> None:
    instance, config, real = win03
    synced(config, consoles, instance, OTHER)

    rdp_file = tmp_path / "win-03.rdp"
    for extra in ((), ("--detach",)):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bastionctl",
                *rdp_args(config, "--rdp-file", str(rdp_file), *extra),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 1, (extra, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, (extra, done.stderr)
        assert lines[0].startswith(
            f"bastionctl: error: {ALIAS}'s RDP server shows a certificate with thumbprint {real}, "
            f"not {OTHER} as EC2 attests (EC2 console output of {instance}"
        ), lines[0]
        assert f"known-hosts forget {ALIAS}" in lines[0]
        assert "connect with" not in done.stdout
        assert not rdp_file.exists()
    listed = run_cli("--config", str(config), "tunnel", "list", "--json")
    assert not [t for t in json.loads(listed.stdout)["tunnels"] if ALIAS in json.dumps(t)]

    row = deep_doctor(config)
    assert row["status"] == "fail", row
    assert real in str(row["detail"]) and OTHER in str(row["detail"])

    forgot = run_cli("--config", str(config), "known-hosts", "forget", ALIAS)
    assert forgot.returncode == 0, forgot.stderr
    with TunnelProcess(rdp_args(config)) as up:  # no thumbprint: no check, no line
        assert up.ready, (up.stdout_lines, up.stderr_text)
    assert not any("RDP certificate" in line for line in up.stdout_lines)


async def test_the_tui_checks_the_certificate_too_and_closes_a_tunnel_to_another(
    win03: tuple[str, Path, str], tmp_path: Path, consoles: dict[str, tuple[str, bool]]
) -> None:
    instance, config, real = win03
    synced(config, consoles, instance, real)

    def said(tui: BastionApp, text: str) -> list[str]:
        return [n.message for n in tui._notifications if text in n.message]

    tui = create_app(config, watch_others=False, check_dns=False)
    async with tui.run_test(size=(130, 40)) as pilot:
        await ready(pilot, tui)
        await until(pilot, lambda: ALIAS in (tui.config.inventory.hosts if tui.config else {}))
        tui.open_tunnel(ALIAS, "rdp")
        await until(pilot, lambda: said(tui, "as EC2 attests"), timeout=60)
        assert f"thumbprint {real}" in said(tui, "as EC2 attests")[0]
        assert tui.manager is not None and len(tui.manager.list()) == 1

        synced(config, consoles, instance, OTHER)
        tui.open_tunnel(ALIAS, "rdp")
        await until(pilot, lambda: said(tui, "do not connect"), timeout=60)
        assert real in said(tui, "do not connect")[0]
        await until(pilot, lambda: len(tui.manager.list()) == 1)  # type: ignore[union-attr]
        tui.manager.close_all()
