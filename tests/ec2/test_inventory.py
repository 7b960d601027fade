"""The inventory from EC2 tags, with boto3 talking HTTP to moto's server on loopback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.ec2 import world
from tests.ec2.conftest import Aws
from tests.lab.helpers import free_port, run_cli


def write_config(path: Path, body: str, domains: str = '["example.com"]') -> Path:
    path.write_text(
        f'[inventory]\nkey_path = "~/.ssh/{{key_name}}.pem"\ndomains = {domains}\n\n' + body
    )
    return path


def two_profiles(aws: Aws, tmp_path: Path, prod_regions: str = '["eu-central-1"]') -> Path:
    return write_config(
        tmp_path / "config.toml",
        f'[[ec2]]\nprofile = "prod"\nregions = {prod_regions}\nendpoint_url = "{aws.url}"\n\n'
        # dev names no regions: the profile's own (us-east-1) is used.
        f'[[ec2]]\nprofile = "dev"\nendpoint_url = "{aws.url}"\n',
    )


def hosts_json(config: Path, *extra: str) -> tuple[dict[str, dict[str, Any]], str]:
    result = run_cli("--config", str(config), "hosts", "--json", *extra)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    return {row["alias"]: row for row in rows}, result.stderr


def test_two_profiles_two_regions_field_by_field(aws: Aws, tmp_path: Path) -> None:
    rows, stderr = hosts_json(two_profiles(aws, tmp_path))
    made = aws.made.instances
    home = aws.home

    def expect(key: str, alias: str, **fields: Any) -> None:
        row = rows[alias]
        info = made[key]
        assert row["instance_id"] == info["instance_id"]
        assert row["region"] == info["region"]
        assert row["vpc_id"] == info["vpc_id"]
        assert row["ipv6"] == info["ipv6"]
        assert row["account"] == "123456789012"
        for name, value in fields.items():
            assert row[name] == value, (alias, name)

    expect(
        "server-01",
        "server-01",
        role="bastion",
        source="prod",
        user="admin",
        fqdn="01.example.com",
        address="01.example.com",
        ipv4=made["server-01"]["public_ipv4"],
        public_ipv4=made["server-01"]["public_ipv4"],
        identity_file=str(home / ".ssh/server-01.pem"),
        platform=None,
        bastion=None,
    )
    expect(
        "server-02",
        "server-02.eu-central-1",
        role="host",
        source="prod",
        user="ubuntu",
        fqdn="server-02.example.com",
        address=made["server-02"]["ipv6"],
        ipv4=made["server-02"]["ipv4"],
        identity_file=str(home / ".ssh/server-02.pem"),
        platform="linux",
        bastion="server-01",
        services=["mysql"],
    )
    expect(
        "server-03",
        "server-03",
        user="ec2",
        platform="windows",
        bastion="server-01",
        services=["rdp", "mssql"],
        identity_file=str(home / ".ssh/server-03"),
        address=made["server-03"]["ipv6"],
    )
    expect(
        "server-02-dev",
        "server-02.us-east-1",
        source="dev",
        user="ubuntu",
        bastion="jump-dev",
        identity_file=None,
    )
    expect(
        "jump-dev",
        "jump-dev",
        role="bastion",
        user="ec2-user",
        address=made["jump-dev"]["public_ipv4"],
    )
    expect(
        "win-dev",
        "win-dev",
        platform="windows",
        user="Administrator",
        services=["rdp"],
        bastion="jump-dev",
    )
    expect("ipv4-only", "db-v4", address=made["ipv4-only"]["ipv4"], bastion="jump-dev")
    expect("chosen", "chosen", bastion="twin-b")
    assert {"twin-a", "twin-b"} <= set(rows)
    assert "old-box" not in rows, "stopped instances are left out"
    assert "server-02" not in rows, "a duplicated alias is not silently given to one of them"
    # Two bastions in its VPC and no tag to choose: listed, with no bastion and both candidates.
    expect("orphan", "orphan", bastion=None, ambiguous_bastions=["twin-a", "twin-b"])
    assert (
        rows["chosen"]["ambiguous_bastions"] == [] and rows["twin-a"]["ambiguous_bastions"] is None
    )
    orphan = made["orphan"]["instance_id"]
    assert any(orphan in line and "twin-a and twin-b" in line for line in stderr.splitlines())
    assert "alias server-02 is used by 2 instances" in stderr
    # Progress goes to stderr, one line per region fetched.
    assert "ec2 prod/eu-central-1:" in stderr and "ec2 dev/us-east-1:" in stderr


def test_the_exported_config_is_what_ssh_resolves(aws: Aws, tmp_path: Path) -> None:
    config = two_profiles(aws, tmp_path)
    rows, _ = hosts_json(config)
    result = run_cli("--config", str(config), "ssh-config")
    assert result.returncode == 0, result.stderr
    exported = tmp_path / "ssh_config"
    exported.write_text(result.stdout)
    for alias in ("server-01", "server-02.eu-central-1", "server-03", "win-dev", "db-v4"):
        resolved = subprocess.run(
            ["ssh", "-G", "-F", str(exported), alias], capture_output=True, text=True, check=True
        ).stdout
        options = dict(line.split(" ", 1) for line in resolved.splitlines() if " " in line)
        row = rows[alias]
        assert options["hostname"] == row["address"]
        assert options["user"] == row["user"]
        assert options.get("proxyjump") == row["bastion"]


def test_a_failing_region_still_yields_the_others(aws: Aws, tmp_path: Path) -> None:
    # moto has no backend for this region and answers 500, as a broken region would.
    config = two_profiles(aws, tmp_path, prod_regions='["eu-central-1", "xx-nowhere-1"]')
    rows, stderr = hosts_json(config)
    assert {"server-01", "server-03", "jump-dev"} <= set(rows)
    failed = [line for line in stderr.splitlines() if "ec2 prod/xx-nowhere-1:" in line]
    assert any("warning" in line for line in failed), stderr
    assert "Traceback" not in stderr


def test_an_unreachable_endpoint_is_one_line_and_exit_1_when_nothing_loads(
    aws: Aws, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "config.toml",
        f'[[ec2]]\nprofile = "prod"\nendpoint_url = "http://127.0.0.1:{free_port()}"\n',
    )
    result = run_cli("--config", str(config), "hosts")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("bastionctl: error")]
    assert len(errors) == 1 and "endpoint unreachable" in errors[0], result.stderr
    assert "Traceback" not in result.stderr

    # The same failure next to a working source is a warning; the rest loads.
    config.write_text(
        config.read_text()
        + f'\n[[ec2]]\nname = "dev"\nprofile = "dev"\nendpoint_url = "{aws.url}"\n'
    )
    rows, stderr = hosts_json(config)
    assert "jump-dev" in rows and "server-01" not in rows
    assert "endpoint unreachable" in stderr


def test_unknown_profile_and_missing_credentials_are_named(aws: Aws, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.toml",
        f'[[ec2]]\nprofile = "nope"\nendpoint_url = "{aws.url}"\n\n'
        f'[[ec2]]\nprofile = "dev"\nendpoint_url = "{aws.url}"\n',
    )
    (aws.home / ".aws" / "config").write_text(
        (aws.home / ".aws" / "config").read_text() + "\n[profile nocreds]\nregion = eu-west-1\n"
    )
    rows, stderr = hosts_json(config)
    assert "jump-dev" in rows
    assert "AWS profile 'nope' is not configured" in stderr
    config.write_text(f'[[ec2]]\nprofile = "nocreds"\nendpoint_url = "{aws.url}"\n')
    result = run_cli("--config", str(config), "hosts")
    assert result.returncode == 1
    assert "no AWS credentials for profile 'nocreds'" in result.stderr


def test_zero_setup_uses_the_aws_environment(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config file at all: boto3's defaults, as the AWS CLI would use them."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", aws.url)
    monkeypatch.setenv("AWS_PROFILE", "dev")
    result = run_cli("hosts", "--json")
    assert result.returncode == 0, result.stderr
    assert {r["alias"] for r in json.loads(result.stdout)} >= {"jump-dev", "win-dev"}
    monkeypatch.setenv("AWS_PROFILE", "prod")
    result = run_cli("hosts", "--json")
    aliases = {r["alias"] for r in json.loads(result.stdout)}
    assert "server-01" in aliases and "jump-dev" not in aliases


def test_hostile_tags_reach_no_output_and_each_warns(aws: Aws, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.toml",
        f'[[ec2]]\nname = "hostile"\nprofile = "prod"\nregions = ["{world.HOSTILE_REGION}"]\n'
        f'endpoint_url = "{aws.url}"\n',
    )
    outputs: list[str] = []
    stderrs: list[str] = []
    for command in (
        ["hosts", "--json"],
        ["hosts"],
        ["ssh-config", "--service-hosts"],
        ["bastion-hosts"],
        ["bastion-hosts", "--format", "dnsmasq"],
        ["bastion-hosts", "--format", "zone", "--domain", "example.org"],
    ):
        result = run_cli("--config", str(config), *command)
        assert result.returncode == 0, (command, result.stderr)
        outputs.append(result.stdout)
        stderrs.append(result.stderr)
    everything = "\n".join(outputs + stderrs)
    for label, value in world.HOSTILE_VALUES.items():
        probe = value[:200]
        assert probe not in everything, label
        for part in value.replace("\r", "\n").split("\n")[1:]:
            assert part.strip() not in everything, (label, part)
    assert "pwned" not in everything and "evil" not in everything
    # The hosts themselves are still listed, with safe values or defaults.
    rows = {r["instance_id"]: r for r in json.loads(outputs[0])}
    warnings = stderrs[0].splitlines()
    for key, instance_id in aws.made.hostile_ids.items():
        field = key.rsplit("-", 1)[1]
        mine = [line for line in warnings if instance_id in line]
        tag = "tag Name" if field == "name" else f"tag bastionctl:{field}"
        assert any(tag in line for line in mine), (key, mine)
        assert instance_id in rows, key


def test_source_selects_and_unknown_source_is_a_usage_error(aws: Aws, tmp_path: Path) -> None:
    config = two_profiles(aws, tmp_path)
    rows, _ = hosts_json(config, "--source", "dev")
    assert {row["source"] for row in rows.values()} == {"dev"}
    result = run_cli("--config", str(config), "hosts", "--source", "nope")
    assert result.returncode == 2
    assert "unknown source nope" in result.stderr and "dev, prod, static" in result.stderr
