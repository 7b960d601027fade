"""EC2 instances (in the session's moto server) at a lab host's address, behind the lab's
bastion: what `known-hosts sync` reads and the tunnels then reach for real."""

from __future__ import annotations

from bastionctl.lab import LabInfo
from tests.ec2 import world


def instance_at(
    moto: str,
    lab: LabInfo,
    region: str,
    server: str,
    alias: str,
    ami: str,
    octet: int,
    instance_type: str = "t3.micro",
) -> str:
    """The id of instance `alias` at lab host `server`'s IPv6 address, in a VPC of its own
    (10.`octet`.0.0/16); made once per moto server, found by its Name tag after that."""
    host = lab.hosts[server]
    ec2 = world.client(moto, region)
    found = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": [alias]}])
    for reservation in found["Reservations"]:
        for instance in reservation["Instances"]:
            return str(instance["InstanceId"])
    vpc = ec2.create_vpc(CidrBlock=f"10.{octet}.0.0/16", AmazonProvidedIpv6CidrBlock=True)["Vpc"]
    prefix = host.ipv6.rsplit("::", 1)[0]
    subnet = ec2.create_subnet(
        VpcId=vpc["VpcId"], CidrBlock=f"10.{octet}.1.0/24", Ipv6CidrBlock=f"{prefix}::/64"
    )["Subnet"]["SubnetId"]
    eni = ec2.create_network_interface(
        SubnetId=subnet,
        PrivateIpAddress=f"10.{octet}.1.10",
        Ipv6Addresses=[{"Ipv6Address": host.ipv6}],
    )["NetworkInterface"]["NetworkInterfaceId"]
    tags = {
        "Name": alias,
        "bastionctl:user": lab.bulk_user,
        "bastionctl:bastion": lab.bastion_alias,
        "bastionctl:key": str(lab.client_keys[server]),
    }
    return str(
        ec2.run_instances(
            ImageId=ami,
            MinCount=1,
            MaxCount=1,
            InstanceType=instance_type,
            NetworkInterfaces=[{"DeviceIndex": 0, "NetworkInterfaceId": eni}],
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
        )["Instances"][0]["InstanceId"]
    )
