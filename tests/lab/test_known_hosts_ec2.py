"""EC2's console output vouches for the lab's real host keys: after `known-hosts sync` against
moto (its GetConsoleOutput patched in-process to print the lab host's own key, boto3 talking
HTTP to it), a tunnel to the lab host connects with no entry of the user's own for it; a
console block with another key makes the tunnel refuse, naming both fingerprints."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest
from moto.ec2.responses.general import General

from bastionctl.lab import LabInfo
from bastionctl.ssh.hostkeys import fingerprint
from tests.ec2 import test_known_hosts_sync as sync_tests
from tests.ec2 import world
from tests.ec2.conftest import Aws, aws, made, moto_url
from tests.ssh.server import new_ed25519

from .ec2_lab import instance_at
from .helpers import TunnelProcess, free_port, run_cli, store_secret

__all__ = ["aws", "made", "moto_url"]

pytestmark = pytest.mark.lab

REGION = "sa-east-1"  # no other test's region in the session's moto server
ALIAS = "app-02"


def tunnel_args() -> tuple[str, ...]:
    """`tunnel port app-02 3306` on a port free now (the scheme's may be taken here)."""
    return ("tunnel", "port", ALIAS, "3306", "--local-port", str(free_port()))


@pytest.fixture(autouse=True)
def consoles(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, bool]]:
    monkeypatch.setattr(General, "get_console_output", sync_tests.patched_console_output)
    sync_tests.CONSOLES.clear()
    return sync_tests.CONSOLES


def lab_instance(moto: str, lab: LabInfo) -> str:
    """app-02: an instance at the lab's server-02 address, reached through its bastion."""
    return instance_at(moto, lab, REGION, "server-02", ALIAS, world.LINUX_AMI, 77)


def config_for(lab: LabInfo, aws: Aws, tmp_path: Path) -> Path:
    """The lab's bastion (its key in the user's own ~/.ssh/known_hosts, nothing else there)
    and the EC2 source; known_hosts left at its default (~/.ssh/known_hosts, the managed file)."""
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
    bastion_lines = [
        line for line in lab.known_hosts.read_text().splitlines() if line.startswith(bastion)
    ]
    own.write_text("\n".join(bastion_lines) + "\n")
    store_secret(path, lab.read_secret(bulk=True), bastion)
    return path


def lab_host_key(lab: LabInfo) -> paramiko.PKey:
    pub = lab.root / "hosts" / "server-02" / "ssh_host_ed25519_key.pub"
    kind, data = pub.read_text().split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(data))


def tunnel_cli(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The tunnel with no terminal; it must end (refused) on its own."""
    try:
        return _tunnel_cli(config, *extra)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the tunnel did not end: {exc.stdout!r} {exc.stderr!r}") from None


def _tunnel_cli(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastionctl", "--config", str(config), *tunnel_args(), *extra],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ec2_attested_lab_keys_let_a_tunnel_connect_and_another_key_refuses(
    lab: LabInfo, aws: Aws, tmp_path: Path, consoles: dict[str, tuple[str, bool]]
) -> None:
    instance = lab_instance(aws.url, lab)
    config = config_for(lab, aws, tmp_path)
    real = lab_host_key(lab)
    address = lab.hosts["server-02"].ipv6

    before = tunnel_cli(config)  # no key anywhere, no terminal: refused, pointing to sync
    assert before.returncode == 1
    assert len(before.stderr.splitlines()) == 1, before.stderr
    line = before.stderr.strip()
    assert line.startswith(f"bastionctl: error: unknown host key for {ALIAS} ({address}): ")
    assert "`bastionctl known-hosts sync` pins the keys EC2 attests for it" in line

    consoles[instance] = (sync_tests.console([real]), False)
    synced = run_cli("--config", str(config), "known-hosts", "sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert f"{ALIAS} ({instance}): pinned 1 key (ssh-ed25519) for {address}" in synced.stdout
    own = (aws.home / ".ssh" / "known_hosts").read_text()
    assert address not in own and fingerprint(real) not in own

    with TunnelProcess(["--config", str(config), *tunnel_args()]) as up:
        assert up.ready, (up.stdout_lines, up.stderr_text)
    assert "host key" not in up.stderr_text, up.stderr_text

    other, _pem = new_ed25519()
    consoles[instance] = (sync_tests.console([other]), False)
    resynced = run_cli("--config", str(config), "known-hosts", "sync")
    assert resynced.returncode == 0, resynced.stdout + resynced.stderr
    # A login of its own: the agent still holds the one checked against the real key.
    refused = tunnel_cli(config, "--standalone")
    assert refused.returncode == 1
    note, line = refused.stderr.splitlines()
    assert note.startswith("bastionctl: --standalone: "), refused.stderr
    assert f"HOST KEY CHANGED for {ALIAS} ({address}): known_hosts (" in line
    assert f"pinned from EC2's console output of {instance} on " in line
    assert f"has {fingerprint(other)}, the server offered {fingerprint(real)}" in line
    assert "`bastionctl known-hosts sync` pins the keys EC2 attests now" in line
