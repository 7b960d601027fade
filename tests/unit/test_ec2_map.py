"""The pure mapping from instance records to the inventory, the merge, and error wording."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from bastionctl.config import Ec2Source, InventorySettings, parse_config
from bastionctl.errors import ConfigError
from bastionctl.inventory.ec2_fetch import describe
from bastionctl.inventory.ec2_map import map_instances, trim
from bastionctl.inventory.load import merge
from bastionctl.model import Bastion, Host, Inventory
from bastionctl.services import ServiceCatalogue

SERVICES = ServiceCatalogue.with_builtins()
VPC = "vpc-0123456789abcdef0"
_counter = iter(range(1, 10_000))


def instance(
    name: str | None, vpc: str = VPC, region: str = "eu-central-1", **extra: Any
) -> dict[str, Any]:
    number = next(_counter)
    tags = {"Name": name} if name else {}
    tags.update({f"bastionctl:{k}": v for k, v in extra.pop("tags", {}).items()})
    raw = {
        "InstanceId": f"i-{number:017x}",
        "State": {"Name": extra.pop("state", "running")},
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        "VpcId": vpc,
        "PrivateIpAddress": f"10.0.0.{number % 250}",
        **extra,
    }
    return trim(raw, source="prod", region=region, owner="123456789012")


def bastion(name: str = "jump", **extra: Any) -> dict[str, Any]:
    tags = {"role": "bastion", **extra.pop("tags", {})}
    return instance(name, PublicIpAddress="198.51.100.7", tags=tags, **extra)


def mapped(*instances: dict[str, Any], settings: InventorySettings | None = None, **kw: Any):  # type: ignore[no-untyped-def]
    return map_instances(instances, settings or InventorySettings(), SERVICES, **kw)


def eni(*addresses: tuple[str, bool], index: int = 0) -> dict[str, Any]:
    return {
        "Attachment": {"DeviceIndex": index},
        "Ipv6Addresses": [{"Ipv6Address": a, "IsPrimaryIpv6": p} for a, p in addresses],
    }


def test_ipv6_top_level_then_primary_flag_then_first_of_the_primary_eni() -> None:
    top = instance("a", Ipv6Address="2001:db8::a", NetworkInterfaces=[eni(("2001:db8::b", True))])
    flagged = instance("b", NetworkInterfaces=[eni(("2001:db8::1", False), ("2001:db8::2", True))])
    first = instance(
        "c",
        NetworkInterfaces=[eni(("2001:db8::9", False), index=1), eni(("2001:db8::3", False))],
    )
    hosts = mapped(bastion(), top, flagged, first).hosts
    assert [hosts[n].ipv6 for n in "abc"] == ["2001:db8::a", "2001:db8::2", "2001:db8::3"]
    assert all(hosts[n].hostname == hosts[n].ipv6 for n in "abc")


def test_platform_defaults_and_key_name_pattern() -> None:
    settings = InventorySettings(key_path="/keys/{key_name}.pem", windows_user="Admin")
    win = instance("w", PlatformDetails="Windows with SQL Server Standard", KeyName="k-1")
    linux = instance("l", Platform=None, KeyName="bad key name")
    result = mapped(bastion(), win, linux, settings=settings)
    w, lx = result.hosts["w"], result.hosts["l"]
    assert (w.platform, w.user, w.services, w.identity_file) == (
        "windows",
        "Admin",
        ("rdp",),
        Path("/keys/k-1.pem"),
    )
    assert (lx.platform, lx.user, lx.services, lx.identity_file) == ("linux", "ec2-user", (), None)
    assert any("KeyName must be" in w and "no default identity file" in w for w in result.warnings)


def test_stopped_instances_only_when_asked() -> None:
    stopped = instance("s", state="stopped")
    assert "s" not in mapped(bastion(), stopped).hosts
    assert "s" in mapped(bastion(), stopped, settings=InventorySettings(include_stopped=True)).hosts


def test_address_choices_and_fallbacks() -> None:
    v6 = [eni(("2001:db8::5", False))]
    both = instance("both", NetworkInterfaces=v6, tags={"fqdn": "both.example.org"})
    v4_only = instance("v4only")
    by_tag = instance(
        "tagged", NetworkInterfaces=v6, tags={"address": "fqdn", "fqdn": "t.example.org"}
    )
    domains = ("example.org",)
    result = mapped(
        bastion(tags={"fqdn": "jump.example.org"}),
        both,
        v4_only,
        by_tag,
        settings=InventorySettings(domains=domains),
    )
    assert result.hosts["both"].hostname == "2001:db8::5"
    assert result.hosts["v4only"].hostname == result.hosts["v4only"].ipv4
    assert result.hosts["tagged"].hostname == "t.example.org"
    assert result.bastions["jump"].hostname == "jump.example.org", "public: the fqdn first"
    as_v4 = mapped(
        bastion(tags={"fqdn": "jump.example.org"}),
        both,
        settings=InventorySettings(host_address="ipv4", bastion_address="ipv4", domains=domains),
    )
    assert as_v4.bastions["jump"].hostname == "198.51.100.7"
    assert as_v4.hosts["both"].hostname == as_v4.hosts["both"].ipv4


def test_bastion_by_tag_by_vpc_or_the_only_one() -> None:
    other_vpc = "vpc-00000000000000001"
    result = mapped(
        bastion("jump-a"),
        bastion("jump-b", vpc=other_vpc),
        instance("in-a"),
        instance("in-b", vpc=other_vpc),
        instance("tagged", tags={"bastion": "jump-b"}),
        instance("to-static", vpc="vpc-00000000000000009", tags={"bastion": "static-jump"}),
        instance("lost", vpc="vpc-00000000000000009"),
        static_bastions=["static-jump"],
    )
    hosts = result.hosts
    assert (hosts["in-a"].bastion, hosts["in-b"].bastion, hosts["tagged"].bastion) == (
        "jump-a",
        "jump-b",
        "jump-b",
    )
    assert hosts["to-static"].bastion == "static-jump"
    # No bastion in its VPC and several elsewhere: the one the config declares wins over
    # those only tags make bastions.
    assert hosts["lost"].bastion == "static-jump" and not hosts["lost"].ambiguous
    # With a single bastion anywhere, an untagged host in another VPC uses it.
    only = mapped(bastion("solo"), instance("far", vpc=other_vpc))
    assert only.hosts["far"].bastion == "solo"
    # With none at all it is left out, with a warning.
    none = mapped(instance("alone", vpc=other_vpc))
    assert not none.hosts
    assert any("no bastion in VPC vpc-00000000000000001" in w for w in none.warnings)


def test_duplicate_aliases_are_renamed_deterministically() -> None:
    records = [
        instance("web", region="us-east-1"),
        instance("web", region="eu-central-1"),
        instance("web", region="eu-central-1"),
        bastion(),
        bastion(region="us-east-1", name="jump-us"),
    ]
    first = mapped(*records)
    second = mapped(*reversed(records))
    assert sorted(first.hosts) == sorted(second.hosts)
    eu = sorted(a for a in first.hosts if a.startswith("web.i-"))
    assert len(eu) == 2 and "web.us-east-1" in first.hosts and "web" not in first.hosts
    assert any("alias web is used by 3 instances" in w for w in first.warnings)


def test_static_entries_override_and_unknown_bastions_drop_static_hosts() -> None:
    ec2 = mapped(bastion(), instance("web"), instance("db"))
    static = Inventory(
        {"jump": Bastion(alias="jump", user="root", ipv6="2001:db8::1")},
        {
            "db": Host(alias="db", user="dba", ipv6="2001:db8::d", bastion="jump"),
            "ghost": Host(alias="ghost", user="u", ipv6="2001:db8::9", bastion="nowhere"),
        },
    )
    warnings: list[str] = []
    inventory = merge(static, ec2, warnings)
    assert inventory.bastions["jump"].user == "root"
    assert inventory.hosts["db"].user == "dba" and inventory.hosts["web"].bastion == "jump"
    assert "ghost" not in inventory.hosts
    assert any("config bastions.jump overrides EC2 instance" in w for w in warnings)
    assert any("config hosts.ghost: bastion nowhere is not in the inventory" in w for w in warnings)


def test_error_wording() -> None:
    source = Ec2Source(name="prod", profile="prod")

    def client_error(code: str) -> botocore.exceptions.ClientError:
        return botocore.exceptions.ClientError(
            {"Error": {"Code": code, "Message": "secret\nline"}}, "DescribeInstances"
        )

    assert "have expired" in describe(client_error("ExpiredToken"), source)
    assert "ec2:DescribeInstances" in describe(client_error("UnauthorizedOperation"), source)
    assert "throttled" in describe(client_error("RequestLimitExceeded"), source)
    assert describe(client_error("Weird"), source) == "Weird: secret line"
    assert "aws configure --profile prod" in describe(
        botocore.exceptions.ProfileNotFound(profile="prod"), source
    )
    assert "no AWS credentials" in describe(botocore.exceptions.NoCredentialsError(), source)
    unreachable = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1/")
    assert describe(unreachable, source).startswith("endpoint unreachable")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[ec2]]\nregions = ["mars-1"]\n', "ec2.regions: must be an AWS region"),
        ('[[ec2]]\nprofile = "a b"\n', "ec2.profile: must be an AWS profile name"),
        ('[[ec2]]\nendpoint_url = "ftp://x"\n', "ec2.endpoint_url: must be an http(s) URL"),
        ('[[ec2]]\nprofile = "a"\n[[ec2]]\nprofile = "a"\n', "two sources are named 'a'"),
        ('[[ec2]]\nregion = "eu-west-1"\n', "ec2.region: unknown key"),
        ('[inventory]\nhost_address = "ipv5"\n', "inventory.host_address: must be one of"),
        ('[inventory]\nkey_path = "~/.ssh/{name}"\n', "may only use the placeholder {key_name}"),
    ],
)
def test_config_errors_name_the_key(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(body, Path("/etc/c.toml"))
    assert message in caught.value.message
    assert caught.value.message.startswith("/etc/c.toml:")


def test_static_hosts_may_name_ec2_bastions_when_ec2_is_configured() -> None:
    config = parse_config(
        '[[ec2]]\nprofile = "prod"\nregions = ["eu-central-1", "us-east-1"]\n'
        '[ec2.filters]\n"tag:env" = "prod"\n\n'
        '[hosts.legacy]\nipv6 = "2001:db8::7"\nuser = "u"\nbastion = "jump"\n',
        Path("c.toml"),
    )
    assert config.ec2[0].filters == (("tag:env", ("prod",)),)
    assert config.inventory.hosts["legacy"].bastion == "jump"


@pytest.mark.parametrize("name", ["example.toml", "ec2.toml"])
def test_shipped_configs_load(name: str) -> None:
    from bastionctl.config import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "bastionctl" / "templates" / name)
    assert config.inventory.hosts
