"""`known-hosts sync` against moto's server with a console output per instance, built from the
real host keys of the in-process SSH targets (tests/ssh): the pinned keys let a login through
the bastion succeed with no known_hosts entry of the user's own, and an attested key that is
not the server's makes the login refuse.

moto's GetConsoleOutput is patched inside its in-process server; boto3 still talks HTTP to it.
The EC2 instances are given the targets' loopback address (10.x cannot reach them), with their
ports in the `port` tag, so bastionctl connects to exactly the in-process servers.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses.general import General

from bastionctl.config import load_config
from bastionctl.doctor import Status, host_keys_check
from bastionctl.errors import HostKeyError
from bastionctl.inventory import console_keys
from bastionctl.inventory.load import load_inventory
from bastionctl.ssh.connect import connect_bastion, connect_through
from bastionctl.ssh.hostkeys import fingerprint
from tests.ec2 import world
from tests.ec2.conftest import Aws
from tests.lab.helpers import run_cli
from tests.ssh.conftest import ssh_world
from tests.ssh.helpers import make_session
from tests.ssh.server import new_ed25519, public_line
from tests.ssh.world import BASTION, World

__all__ = ["ssh_world"]

REGION = "eu-north-1"
# instance id -> (console text, whether Latest=True is refused as for an old instance type)
CONSOLES: dict[str, tuple[str, bool]] = {}


def console(keys: list[paramiko.PKey], prefix: str = "ec2: ") -> str:
    """What cloud-init prints: fingerprints (ec2: prefix) then keys, between boot noise."""
    fps = [f"256 {fingerprint(k)} root@ip-10-0-0-5 ({k.get_name()[4:].upper()})" for k in keys]
    lines = ["[    0.000000] Linux version 6.1.0-amzn", f"{prefix}{'#' * 61}"]
    lines += [f"{prefix}{console_keys.FPS_BEGIN}", *(prefix + f for f in fps)]
    lines += [f"{prefix}{console_keys.FPS_END}", console_keys.KEYS_BEGIN]
    lines += [f"{public_line(k)} root@ip-10-0-0-5" for k in keys]
    lines += [console_keys.KEYS_END, "Amazon Linux 2023 login:"]
    return "\r\n".join(lines) + "\r\n"


def patched_console_output(self: General) -> ActionResult:
    instance_id = self._get_param("InstanceId")
    instance = self.ec2_backend.get_instance(instance_id)
    text, no_latest = CONSOLES.get(instance.id, ("no cloud-init here\n", False))
    if no_latest and self._get_param("Latest"):
        raise EC2ClientError(
            "UnsupportedOperation", "Latest console output is not supported for this instance"
        )
    return ActionResult(
        {
            "InstanceId": instance.id,
            "Timestamp": utcnow(),
            "Output": base64.b64encode(text.encode()).decode(),
        }
    )


@pytest.fixture(autouse=True)
def consoles(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, tuple[str, bool]]]:
    monkeypatch.setattr(General, "get_console_output", patched_console_output)
    CONSOLES.clear()
    yield CONSOLES
    CONSOLES.clear()


@pytest.fixture(scope="module")
def instances(moto_url: str, ssh_world: World) -> dict[str, str]:
    """app-02 and app-03 at the targets' 127.0.0.1:PORT, and a Windows box with no block."""
    region = world.Region(moto_url, REGION, "2a05:d016:123", 0)
    ec2 = region.ec2
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.0.0/24")["Subnet"]["SubnetId"]
    ids: dict[str, str] = {}
    for alias, target in (("app-02", "server-02"), ("app-03", "server-03")):
        eni = ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress="127.0.0.1")
        tags = {
            "Name": alias,
            "bastionctl:user": "bulk",
            "bastionctl:port": str(ssh_world.targets[target].port),
            "bastionctl:address": "ipv4",
            "bastionctl:bastion": BASTION,
            "bastionctl:key": str(ssh_world.identity_files[target]),
        }
        ids[alias] = ec2.run_instances(
            ImageId=world.LINUX_AMI,
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            NetworkInterfaces=[
                {
                    "DeviceIndex": 0,
                    "NetworkInterfaceId": eni["NetworkInterface"]["NetworkInterfaceId"],
                }
            ],
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
        )["Instances"][0]["InstanceId"]
    ids["win-09"] = region.instance(
        world.Made(), "win-09", name="win-09", suffix=9, windows=True, bastion=BASTION
    )
    return ids


def write_config(aws: Aws, ssh_world: World, tmp_path: Path) -> Path:
    """The tests/ssh bastion (static, its key in the user's ~/.ssh/known_hosts) and EC2;
    known_hosts left at its default: ~/.ssh/known_hosts and the managed file."""
    text = ssh_world.config_text("bulk")
    head, _, rest = text.partition("\n[hosts.")
    services = rest[rest.index("\n[services.") :]
    head = "\n".join(line for line in head.splitlines() if not line.startswith("known_hosts"))
    ec2 = f'\n[[ec2]]\nprofile = "prod"\nregions = ["{REGION}"]\nendpoint_url = "{aws.url}"\n'
    path = tmp_path / "config.toml"
    path.write_text(head + "\n" + services + ec2)
    own = aws.home / ".ssh" / "known_hosts"
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text(ssh_world.bastion.known_hosts_line() + "\n")
    ssh_world.store_secret("bulk")
    return path


def login(config_path: Path, tmp_path: Path, alias: str) -> paramiko.Transport:
    config = load_inventory(load_config(config_path), refresh=True).config
    session = make_session(config, tmp_path)
    bastion = connect_bastion(config.inventory.bastions[BASTION], session)
    try:
        return connect_through(
            bastion, config.inventory.bastions[BASTION], config.inventory.hosts[alias], session
        )
    except BaseException:
        bastion.close()
        raise


def sync(config: Path, *extra: str) -> Any:
    return run_cli("--config", str(config), "known-hosts", "sync", *extra)


def test_sync_pins_the_attested_keys_and_a_login_needs_no_entry_of_ones_own(
    aws: Aws, ssh_world: World, instances: dict[str, str], tmp_path: Path, isolated_dirs: Path
) -> None:
    config = write_config(aws, ssh_world, tmp_path)
    with pytest.raises(HostKeyError, match="unknown host key"):
        login(config, tmp_path, "app-02")

    CONSOLES[instances["app-02"]] = (console([ssh_world.targets["server-02"].host_key]), False)
    # An old instance type: Latest=True is refused, the boot-time output is read instead.
    CONSOLES[instances["app-03"]] = (console([ssh_world.targets["server-03"].host_key]), True)
    result = sync(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    managed = isolated_dirs / "data" / "bastionctl" / "known_hosts"
    port2 = ssh_world.targets["server-02"].port
    assert (
        f"app-02 ({instances['app-02']}): pinned 1 key (ssh-ed25519) for [127.0.0.1]:{port2}; "
        "cross-checked" in result.stdout
    )
    assert f"app-03 ({instances['app-03']}): pinned 1 key" in result.stdout
    assert (
        f"win-09 ({instances['win-09']}): no SSH host key block in the console output "
        "(a Windows instance)" in result.stdout
    )
    assert "2 pinned, 1 without a key block, 0 refused, 0 failed" in result.stdout
    assert managed.stat().st_mode & 0o777 == 0o600
    text = managed.read_text()
    assert "# bastionctl ec2-console " in text and f"instance={instances['app-02']}" in text
    assert f"[127.0.0.1]:{port2} {public_line(ssh_world.targets['server-02'].host_key)}" in text

    transport = login(config, tmp_path, "app-02")
    assert transport.is_authenticated()
    transport.close()

    listed = run_cli("--config", str(config), "known-hosts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {(r["alias"], r["origin"]): r for r in json.loads(listed.stdout)}
    row = rows[("app-02", "ec2-console")]
    assert row["fingerprint"] == fingerprint(ssh_world.targets["server-02"].host_key)
    assert row["instance_id"] == instances["app-02"] and row["pinned_at"]
    assert row["address"] == f"[127.0.0.1]:{port2}" and row["key_type"] == "ssh-ed25519"
    assert rows[(BASTION, str(aws.home / ".ssh" / "known_hosts"))]["pinned_at"] is None

    loaded = load_inventory(load_config(config)).config
    inventory = loaded.inventory
    row = host_keys_check(loaded, [*inventory.bastions.values(), *inventory.hosts.values()])
    # app-02/03 from the console, the bastion from ~/.ssh/known_hosts, win-09 nowhere.
    assert row.detail == "2 attested by EC2, 1 pinned, 1 unknown" and row.status is Status.WARN

    # The same keys again: nothing to write.
    again = sync(config)
    assert "(unchanged)" in again.stdout and managed.read_text() == text

    forgot = run_cli("--config", str(config), "known-hosts", "forget", "app-02")
    assert forgot.returncode == 0 and "Forgot 1 key pinned for app-02" in forgot.stdout
    with pytest.raises(HostKeyError, match="unknown host key"):
        login(config, tmp_path, "app-02")
    missing = run_cli("--config", str(config), "known-hosts", "forget", "app-02")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "no key is pinned for app-02" in missing.stderr


def test_an_attested_key_that_is_not_the_servers_makes_the_login_refuse(
    aws: Aws, ssh_world: World, instances: dict[str, str], tmp_path: Path
) -> None:
    config = write_config(aws, ssh_world, tmp_path)
    other = new_ed25519()[0]
    CONSOLES[instances["app-02"]] = (console([other]), False)
    assert sync(config).returncode == 0
    with pytest.raises(HostKeyError, match="HOST KEY CHANGED") as caught:
        login(config, tmp_path, "app-02")
    assert fingerprint(other) in str(caught.value)
    assert fingerprint(ssh_world.targets["server-02"].host_key) in str(caught.value)


def test_inconsistent_or_cut_off_blocks_pin_nothing_and_say_why(
    aws: Aws, ssh_world: World, instances: dict[str, str], tmp_path: Path, isolated_dirs: Path
) -> None:
    config = write_config(aws, ssh_world, tmp_path)
    real = ssh_world.targets["server-02"].host_key
    mismatched = console([real]).replace(fingerprint(real), fingerprint(new_ed25519()[0]))
    CONSOLES[instances["app-02"]] = (mismatched, False)
    cut = console([ssh_world.targets["server-03"].host_key])
    CONSOLES[instances["app-03"]] = (cut[: cut.index(console_keys.KEYS_END)], False)
    result = sync(config)
    assert result.returncode == 1
    assert (
        "app-02" in result.stdout
        and "nothing pinned: the fingerprint block lists ED25519" in result.stdout
    )
    assert "nothing pinned: the last host key block is cut off" in result.stdout
    assert "0 pinned, 1 without a key block, 2 refused, 0 failed" in result.stdout
    assert not (isolated_dirs / "data" / "bastionctl" / "known_hosts").exists()


def windows_console(thumbprint: str) -> str:
    """What EC2Launch prints on a Windows instance: no SSH key block, the RDP thumbprint."""
    lines = [
        "2026/12/01 09:00:00Z: Windows sysprep configuration complete.",
        "2026/12/01 09:00:01Z: RDPCERTIFICATE-SUBJECTNAME: EC2AMAZ-0A1B2C3",
        f"2026/12/01 09:00:01Z: RDPCERTIFICATE-THUMBPRINT: {thumbprint}",
        "2026/12/01 09:00:02Z: Message: Windows is Ready to use",
    ]
    return "\r\n".join(lines) + "\r\n"


def test_a_windows_instances_rdp_thumbprint_is_recorded_listed_replaced_and_forgotten(
    aws: Aws, ssh_world: World, instances: dict[str, str], tmp_path: Path, isolated_dirs: Path
) -> None:
    config = write_config(aws, ssh_world, tmp_path)
    first, second = "AB" * 20, "0123456789ABCDEF0123456789ABCDEF01234567"
    CONSOLES[instances["win-09"]] = (windows_console(first.lower()), False)
    result = sync(config)
    assert result.returncode == 0, result.stdout + result.stderr
    stored = isolated_dirs / "data" / "bastionctl" / "rdp_certificates.json"
    assert (
        f"win-09 ({instances['win-09']}): no SSH host key block in the console output "
        f"(a Windows instance); RDP certificate thumbprint {first} recorded" in result.stdout
    )
    assert f"1 RDP certificate thumbprint: {stored}" in result.stdout
    assert stored.stat().st_mode & 0o777 == 0o600
    [entry] = json.loads(stored.read_text())["certificates"]
    assert entry["instance_id"] == instances["win-09"] and entry["thumbprint"] == first
    assert entry["alias"] == "win-09" and entry["region"] == REGION

    listed = run_cli("--config", str(config), "known-hosts", "list", "--json")
    rows = [r for r in json.loads(listed.stdout) if r["key_type"] == "rdp-certificate"]
    assert [(r["alias"], r["fingerprint"], r["origin"], r["instance_id"]) for r in rows] == [
        ("win-09", f"SHA1:{first}", "ec2-console", instances["win-09"])
    ]

    CONSOLES[instances["win-09"]] = (windows_console(second), False)
    again = sync(config)
    assert again.returncode == 0, again.stderr
    assert (
        f"win-09: EC2 now attests the RDP certificate thumbprint {second} for "
        f"{instances['win-09']}, not {first}" in again.stderr
    )
    assert [e["thumbprint"] for e in json.loads(stored.read_text())["certificates"]] == [second]

    forgot = run_cli("--config", str(config), "known-hosts", "forget", "win-09")
    assert forgot.returncode == 0, forgot.stderr
    assert "Forgot its RDP certificate thumbprint pinned for win-09" in forgot.stdout
    assert json.loads(stored.read_text())["certificates"] == []
    twice = run_cli("--config", str(config), "known-hosts", "forget", "win-09")
    assert twice.returncode == 2 and len(twice.stderr.strip().splitlines()) == 1
