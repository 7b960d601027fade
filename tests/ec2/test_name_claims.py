"""Tags against names, end to end: boto3 to moto, `bastionctl` as a process, the real ssh.

Anyone with ec2:CreateTags writes tag values, so no tag may take a name away from the user's
own ssh config, from the config's own entries, or from another instance, and one more
instance tagged as a bastion must not take a VPC's hosts away.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.ec2 import world
from tests.ec2.conftest import Aws
from tests.lab.helpers import run_cli

DOMAIN = world.CLAIMS_DOMAIN


def claims_config(aws: Aws, tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        # The ControlPath's directory is made by --write: in tmp, not the passwd home's ~/.ssh.
        f'[settings]\ncontrol_path = "{tmp_path}/cm/%C"\n\n'
        f'[inventory]\ndomains = ["{DOMAIN}"]\n\n'
        f'[[ec2]]\nname = "claims"\nprofile = "prod"\nregions = ["{world.CLAIMS_REGION}"]\n'
        f'endpoint_url = "{aws.url}"\n\n'
        # The user's own entry: its alias and fqdn are names no tag may take.
        f'[hosts.legacy]\nipv6 = "2001:db8:1e9::6"\nuser = "dba"\nbastion = "gate"\n'
        f'fqdn = "legacy.{DOMAIN}"\n' + extra
    )
    return path


def hosts_json(config: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    result = run_cli("--config", str(config), "hosts", "--json")
    assert result.returncode == 0, result.stderr
    return {row["alias"]: row for row in json.loads(result.stdout)}, result.stderr.splitlines()


def instance_id(aws: Aws, label: str) -> str:
    return str(aws.made.instances[label]["instance_id"])


def ssh_g(config: Path, name: str, home: Path) -> dict[str, str]:
    """What the real ssh makes of `name` with `config` as the user's ~/.ssh/config (its
    relative Include is found under $HOME/.ssh, as ssh expands ~ there from $HOME)."""
    out = subprocess.run(
        ["ssh", "-G", "-F", str(config), name],
        capture_output=True,
        text=True,
        check=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def test_name_github_com_does_not_capture_the_users_own_ssh_host(aws: Aws, tmp_path: Path) -> None:
    config = claims_config(aws, tmp_path)
    ssh_dir = aws.home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    user_config = ssh_dir / "config"
    user_config.write_text("Host github.com\n    HostName github.com\n    User git\n")
    user_config.chmod(0o600)

    written = run_cli("--config", str(config), "ssh-config", "--write")
    assert written.returncode == 0, written.stderr
    include = (ssh_dir / "config.d" / "bastionctl.conf").read_text()
    assert "Include config.d/bastionctl.conf" in user_config.read_text()
    assert "github.com" not in include

    mine = ssh_g(user_config, "github.com", aws.home)
    assert (mine["hostname"], mine["user"]) == ("github.com", "git")
    assert "proxyjump" not in mine
    # The include is read at all: a name inside the domain goes through the bastion.
    web = ssh_g(user_config, f"web.{DOMAIN}", aws.home)
    assert web["proxyjump"] == "gate"
    assert web["hostname"] == aws.made.instances["in-domain"]["ipv6"]


def test_names_go_to_one_owner_and_the_config_wins(aws: Aws, tmp_path: Path) -> None:
    rows, warnings = hosts_json(claims_config(aws, tmp_path))
    by_id = {row["instance_id"]: row for row in rows.values()}

    # A dotted Name inside the domain is an alias; one outside it refuses its instance.
    assert rows[f"web.{DOMAIN}"]["instance_id"] == instance_id(aws, "in-domain")
    assert rows[f"web.{DOMAIN}"]["bastion"] == "gate"
    github = instance_id(aws, "github")
    assert github not in by_id
    refused = [line for line in warnings if github in line]
    assert len(refused) == 1 and "tag Name" in refused[0] and DOMAIN in refused[0], refused
    assert "github" not in "\n".join(warnings)

    # One fqdn, two claims: given to neither, one warning naming both instances.
    claim_a, claim_b = instance_id(aws, "claim-a"), instance_id(aws, "claim-b")
    assert rows["claim-a"]["fqdn"] is None and rows["claim-b"]["fqdn"] is None
    both = [line for line in warnings if claim_a in line and claim_b in line]
    assert len(both) == 1 and "given to none" in both[0], warnings

    # The config's [hosts.legacy] replaces the instance named legacy (reported), and the
    # fqdn tag that claims its fqdn is dropped.
    assert rows["legacy"]["source"] == "static" and rows["legacy"]["user"] == "dba"
    assert instance_id(aws, "legacy") not in by_id
    assert any(
        f"config hosts.legacy overrides EC2 instance {instance_id(aws, 'legacy')}" in line
        for line in warnings
    )
    assert rows["shadow"]["fqdn"] is None
    shadow = [line for line in warnings if instance_id(aws, "shadow") in line]
    assert any("config hosts.legacy" in line for line in shadow), shadow

    result = run_cli("--config", str(tmp_path / "config.toml"), "bastion-hosts", "--ipv4")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert not [line for line in lines if f"db.{DOMAIN}" in line]
    assert [line.split()[1:] for line in lines if f"legacy.{DOMAIN}" in line] == [
        [f"legacy.{DOMAIN}", "legacy"]
    ]
    assert not [line for line in lines if "github" in line]


def test_a_second_bastion_leaves_its_vpc_listed_as_ambiguous(aws: Aws, tmp_path: Path) -> None:
    config = claims_config(aws, tmp_path)
    rows, warnings = hosts_json(config)
    app = rows["app"]
    assert app["bastion"] is None
    assert app["ambiguous_bastions"] == ["real-gate", "rogue-gate"]
    assert rows["pinned"]["bastion"] == "real-gate", "an explicit bastion tag keeps its bastion"
    assert rows["pinned"]["ambiguous_bastions"] == []
    assert any(instance_id(aws, "app") in line and "ambiguous" in line for line in warnings)
    table = run_cli("--config", str(config), "hosts").stdout
    assert "ambiguous: real-gate or rogue-gate" in table

    exported = run_cli("--config", str(config), "ssh-config")
    assert exported.returncode == 0
    assert "Host app\n" not in exported.stdout and "Host pinned\n" in exported.stdout
    assert "host 'app' left out: its bastion is ambiguous" in exported.stderr
    hosts_file = run_cli("--config", str(config), "bastion-hosts").stdout
    assert aws.made.instances["app"]["ipv6"] not in hosts_file

    for command in (["tunnel", "port", "app", "5432"], ["tunnel", "rdp", "app"], ["ssh", "app"]):
        refused = run_cli("--config", str(config), *command, timeout=30)
        assert refused.returncode == 2, (command, refused.stderr)
        errors = [line for line in refused.stderr.splitlines() if "error" in line]
        assert len(errors) == 1, (command, refused.stderr)
        assert errors[0].startswith("bastionctl: error: host app has an ambiguous bastion")
        assert "real-gate or rogue-gate" in errors[0]

    # The config declaring the real bastion settles it; the extra one changes nothing.
    declared = claims_config(
        aws, tmp_path, '\n[bastions.real-gate]\nipv6 = "2001:db8:1e9::1"\nuser = "op"\n'
    )
    rows, _ = hosts_json(declared)
    assert rows["app"]["bastion"] == "real-gate" and rows["app"]["ambiguous_bastions"] == []


async def test_the_tui_lists_an_ambiguous_host_last_with_its_candidates(
    aws: Aws, tmp_path: Path
) -> None:
    from bastionctl.tui.app import create_app
    from bastionctl.tui.host_details import HostDetails
    from bastionctl.tui.host_table import HostTable
    from tests.tui.pilot import until

    tui = create_app(claims_config(aws, tmp_path), watch_others=False, check_dns=False)
    async with tui.run_test(size=(150, 40)) as pilot:
        table = tui.query_one(HostTable)
        await until(pilot, lambda: table.row_count > 0, timeout=20)
        last = table.rows[-1]
        assert (last.alias, last.group) == ("app", "ambiguous: real-gate|rogue-gate")
        assert [r.alias for r in table.rows if r.group == "real-gate"] == ["real-gate", "pinned"]
        table.cursor = table.row_count - 1
        details = tui.query_one(HostDetails)
        await until(pilot, lambda: details.alias == "app")
        assert dict(details.pairs)["bastion"].startswith("ambiguous: real-gate or rogue-gate;")
