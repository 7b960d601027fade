"""An EC2 world in moto's server: the seed's server-01/02/03 and more, in several regions.

moto fills IPv6 only under NetworkInterfaces[].Ipv6Addresses, so every instance gets an ENI
created first with fixed addresses, and bastions an Elastic IP for their public IPv4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3

LINUX_AMI = "ami-1e749f67"
WINDOWS_AMI = "ami-03cf127a"
PREFIX = "bastionctl:"
HOSTILE_REGION = "ap-south-1"
BULK_REGION = "sa-east-1"
CLAIMS_REGION = "eu-west-3"
CLAIMS_DOMAIN = "corp.example"

# Tag values nobody should see again: each would change ssh config, a hosts file or a shell.
HOSTILE_VALUES = {
    "newline": "ubuntu\n  ProxyCommand touch /tmp/pwned",
    "cr": "server\rHostName evil",
    "space": "two words",
    "quote": 'say "hi"',
    "percent": "%h-%p",
    "hash": "alias#comment",
    "equals": "user=root",
    "unicode": "sérvér-ü",
    "huge": "x" * 10_240,
    "proxy": "ProxyCommand nc evil 22",
}


@dataclass
class Made:
    """What was created, to compare the inventory with field by field."""

    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    hostile_ids: dict[str, str] = field(default_factory=dict)


def client(url: str, region: str) -> Any:
    session = boto3.Session(
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="seed",  # moto accepts any key
        region_name=region,
    )
    return session.client("ec2", endpoint_url=url)


def _tags(name: str | None, **values: str) -> list[dict[str, Any]]:
    items = [{"Key": "Name", "Value": name}] if name is not None else []
    items += [{"Key": f"{PREFIX}{k}", "Value": v} for k, v in values.items()]
    return [{"ResourceType": "instance", "Tags": items}] if items else []


class Region:
    def __init__(self, url: str, region: str, v6_prefix: str, v4_second: int) -> None:
        self.ec2 = client(url, region)
        self.region = region
        self.v6 = v6_prefix
        vpc = self.ec2.create_vpc(
            CidrBlock=f"10.{v4_second}.0.0/16", AmazonProvidedIpv6CidrBlock=True
        )["Vpc"]
        self.vpc_id = vpc["VpcId"]
        self.public = self.ec2.create_subnet(
            VpcId=self.vpc_id,
            CidrBlock=f"10.{v4_second}.0.0/24",
            Ipv6CidrBlock=f"{v6_prefix}:100::/64",
        )["Subnet"]["SubnetId"]
        self.private = self.ec2.create_subnet(
            VpcId=self.vpc_id,
            CidrBlock=f"10.{v4_second}.1.0/24",
            Ipv6CidrBlock=f"{v6_prefix}:101::/64",
        )["Subnet"]["SubnetId"]
        self.v4_second = v4_second

    def instance(
        self,
        made: Made,
        label: str,
        /,
        *,
        name: str | None,
        suffix: int,
        public: bool = False,
        windows: bool = False,
        key_name: str | None = None,
        extra_v6: int | None = None,
        **tags: str,
    ) -> str:
        subnet = self.public if public else self.private
        net = "100" if public else "101"
        ipv6 = f"{self.v6}:{net}::{suffix:x}"
        ipv4 = f"10.{self.v4_second}.{0 if public else 1}.{suffix}"
        addresses = [{"Ipv6Address": ipv6}]
        if extra_v6 is not None:
            addresses.append({"Ipv6Address": f"{self.v6}:{net}::{extra_v6:x}"})
        eni = self.ec2.create_network_interface(
            SubnetId=subnet, PrivateIpAddress=ipv4, Ipv6Addresses=addresses
        )["NetworkInterface"]["NetworkInterfaceId"]
        kwargs: dict[str, Any] = {}
        if key_name:
            kwargs["KeyName"] = key_name
        instance = self.ec2.run_instances(
            ImageId=WINDOWS_AMI if windows else LINUX_AMI,
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            NetworkInterfaces=[{"DeviceIndex": 0, "NetworkInterfaceId": eni}],
            TagSpecifications=_tags(name, **tags),
            **kwargs,
        )["Instances"][0]
        public_ip = None
        if public:
            allocation = self.ec2.allocate_address(Domain="vpc")
            self.ec2.associate_address(
                AllocationId=allocation["AllocationId"], NetworkInterfaceId=eni
            )
            public_ip = allocation["PublicIp"]
        made.instances[label] = {
            "instance_id": instance["InstanceId"],
            "region": self.region,
            "vpc_id": self.vpc_id,
            "ipv6": ipv6,
            "ipv4": ipv4,
            "public_ipv4": public_ip,
        }
        return str(instance["InstanceId"])


def build(url: str) -> Made:
    """eu-central-1 (profile prod), us-east-1 (profile dev) and the hostile region."""
    made = Made()
    eu = Region(url, "eu-central-1", "2a05:d014:abc", 10)
    eu.instance(
        made,
        "server-01",
        name="server-01",
        suffix=1,
        public=True,
        key_name="server-01",
        role="bastion",
        user="admin",
        fqdn="01.example.com",
    )
    eu.instance(
        made,
        "server-02",
        name="server-02",
        suffix=2,
        key_name="server-02",
        user="ubuntu",
        fqdn="server-02.example.com",
        services="mysql",
    )
    eu.instance(
        made,
        "server-03",
        name="server-03",
        suffix=3,
        windows=True,
        key_name="server-03",
        extra_v6=0x33,
        user="ec2",
        fqdn="server-03.example.com",
        services="rdp, sqlserver",
        key="~/.ssh/server-03",
    )
    stopped = eu.instance(made, "stopped", name="old-box", suffix=9)
    eu.ec2.stop_instances(InstanceIds=[stopped])

    us = Region(url, "us-east-1", "2600:1f18:def", 20)
    us.instance(made, "jump-dev", name="jump-dev", suffix=1, public=True, role="bastion")
    us.instance(made, "server-02-dev", name="server-02", suffix=2, user="ubuntu")
    us.instance(made, "win-dev", name="win-dev", suffix=4, windows=True)
    us.instance(made, "ipv4-only", name="db-v4", suffix=5, address="ipv4")

    # A second VPC with two bastions and a host that does not say which one it wants.
    twin = Region(url, "us-east-1", "2600:1f18:aaa", 30)
    twin.instance(made, "twin-a", name="twin-a", suffix=1, public=True, role="bastion")
    twin.instance(made, "twin-b", name="twin-b", suffix=2, public=True, role="bastion")
    twin.instance(made, "orphan", name="orphan", suffix=3)
    twin.instance(made, "chosen", name="chosen", suffix=4, bastion="twin-b")
    return made


def build_hostile(url: str, made: Made) -> None:
    """One bastion, and a host per hostile value in every field that reaches output."""
    region = Region(url, HOSTILE_REGION, "2406:da1a:bad", 40)
    region.instance(made, "edge", name="edge", suffix=1, public=True, role="bastion")
    suffix = 2
    for label, value in HOSTILE_VALUES.items():
        for field_name in ("user", "fqdn", "key", "port", "services", "bastion", "role", "address"):
            key = f"hostile-{label}-{field_name}"
            made.hostile_ids[key] = region.instance(
                made, key, name=key, suffix=suffix, **{field_name: value}
            )
            suffix += 1
        key = f"hostile-{label}-name"
        made.hostile_ids[key] = region.instance(made, key, name=value, suffix=suffix)
        suffix += 1


def build_claims(url: str, made: Made) -> None:
    """Tags that try to take a name: one outside the domains, one the user's own ssh config
    has, an fqdn two instances claim, names the config uses; and a second bastion in a VPC."""
    region = Region(url, CLAIMS_REGION, "2a05:d012:c1a", 60)
    region.instance(made, "gate", name="gate", suffix=1, public=True, role="bastion")
    region.instance(made, "in-domain", name=f"web.{CLAIMS_DOMAIN}", suffix=2)
    region.instance(made, "github", name="github.com", suffix=3)
    region.instance(made, "claim-a", name="claim-a", suffix=4, fqdn=f"db.{CLAIMS_DOMAIN}")
    region.instance(made, "claim-b", name="claim-b", suffix=5, fqdn=f"db.{CLAIMS_DOMAIN}")
    # The config has [hosts.legacy] with fqdn legacy.corp.example: both names are the user's.
    region.instance(made, "legacy", name="legacy", suffix=6)
    region.instance(made, "shadow", name="shadow", suffix=7, fqdn=f"legacy.{CLAIMS_DOMAIN}")
    # A second VPC where one more instance tagged as a bastion appears next to the real one.
    second = Region(url, CLAIMS_REGION, "2a05:d012:c1b", 61)
    second.instance(made, "real-gate", name="real-gate", suffix=1, public=True, role="bastion")
    second.instance(made, "rogue-gate", name="rogue-gate", suffix=2, public=True, role="bastion")
    second.instance(made, "app", name="app", suffix=3)
    second.instance(made, "pinned", name="pinned", suffix=4, bastion="real-gate")


def build_bulk(url: str, count: int, per_reservation: int) -> None:
    """`count` instances in reservations of `per_reservation` (moto pages by reservation)."""
    ec2 = client(url, BULK_REGION)
    vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.50.0.0/20")["Subnet"]["SubnetId"]
    ec2.run_instances(
        ImageId=LINUX_AMI,
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        TagSpecifications=_tags("bulk-bastion", role="bastion"),
    )
    for _ in range(count // per_reservation):
        ec2.run_instances(
            ImageId=LINUX_AMI,
            MinCount=per_reservation,
            MaxCount=per_reservation,
            SubnetId=subnet,
        )
