"""Benchmarks that need no lab: EC2 paging and mapping, ssh config rendering, at scale.

`python -m bench.offline [--count 10000]`. The EC2 answers are synthetic pages served through
botocore's Stubber (moto gets slow past ~1,000 instances), so what is timed is boto3's
paginator and parser plus bastionctl's own mapping.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

PAGE = 1000


def synthetic_instances(count: int) -> list[dict[str, Any]]:
    """`count` instances in one VPC (the first is its bastion), as describe_instances has them."""
    out = []
    for n in range(count):
        tags = [{"Key": "Name", "Value": f"host-{n:05d}"}]
        if n == 0:
            tags.append({"Key": "bastionctl:role", "Value": "bastion"})
        elif n % 3 == 0:
            tags += [
                {"Key": "bastionctl:services", "Value": "rdp,mssql"},
                {"Key": "bastionctl:user", "Value": "ec2"},
            ]
        out.append(
            {
                "InstanceId": f"i-{n:017x}",
                "State": {"Code": 16, "Name": "running"},
                "Tags": tags,
                "Platform": "windows" if n % 3 == 0 else None,
                "PlatformDetails": "Windows" if n % 3 == 0 else "Linux/UNIX",
                "KeyName": f"key-{n % 7}",
                "VpcId": "vpc-0123456789abcdef0",
                "PrivateIpAddress": f"10.{n // 65536}.{n // 256 % 256}.{n % 256}",
                "PublicIpAddress": "198.51.100.1" if n == 0 else None,
                "NetworkInterfaces": [
                    {
                        "Attachment": {"DeviceIndex": 0},
                        "Ipv6Addresses": [
                            {"Ipv6Address": f"2001:db8::{n:x}", "IsPrimaryIpv6": True}
                        ],
                    }
                ],
            }
        )
    return out


def _clean(instance: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in instance.items() if v is not None}


def fetch_through_paginator(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """boto3's paginator over pages of PAGE instances, answered by a Stubber; trimmed."""
    import boto3
    from botocore.stub import ANY, Stubber

    from bastionctl.inventory.ec2_map import trim

    client = boto3.client(
        "ec2",
        region_name="eu-central-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",  # not a secret, never sent
    )
    stubber = Stubber(client)
    pages = [instances[i : i + PAGE] for i in range(0, len(instances), PAGE)]
    for index, page in enumerate(pages):
        response: dict[str, Any] = {
            "Reservations": [
                {
                    "ReservationId": f"r-{index:017x}",
                    "OwnerId": "123456789012",
                    "Instances": [_clean(i) for i in page],
                }
            ]
        }
        if index + 1 < len(pages):
            response["NextToken"] = f"token-{index}"
        expected = {"Filters": ANY, "MaxResults": ANY}
        if index:
            expected["NextToken"] = ANY
        stubber.add_response("describe_instances", response, expected)
    out: list[dict[str, Any]] = []
    with stubber:
        paginator = client.get_paginator("describe_instances")
        for page in paginator.paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["running"]}],
            PaginationConfig={"PageSize": PAGE},
        ):
            for reservation in page["Reservations"]:
                for instance in reservation["Instances"]:
                    out.append(
                        trim(instance, source="bench", region="eu-central-1", owner="123456789012")
                    )
    return out


def timed(func: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def run(count: int, repeat: int = 5) -> dict[str, float]:
    from bastionctl.config import InventorySettings
    from bastionctl.inventory.ec2_map import map_instances
    from bastionctl.model import Inventory
    from bastionctl.render.ssh_config import SshOptions, render
    from bastionctl.services import ServiceCatalogue

    instances = synthetic_instances(count)
    fetch_s, records = timed(lambda: fetch_through_paginator(instances), max(1, repeat // 2))
    services = ServiceCatalogue.with_builtins()
    settings = InventorySettings()
    map_s, mapped = timed(lambda: map_instances(records, settings, services), repeat)
    if len(mapped.hosts) + len(mapped.bastions) != count:
        raise SystemExit(f"mapping lost instances: {len(mapped.hosts)} hosts of {count}")
    inventory = Inventory(mapped.bastions, mapped.hosts)
    options = SshOptions(
        control_path="~/.ssh/bastionctl-cm/%C",
        control_persist="10m",
        server_alive_interval=15,
        known_hosts=(),
    )
    render_s, rendered = timed(lambda: render(inventory, options, [], services), repeat)
    if rendered.text.count("\nHost ") < count:
        raise SystemExit("rendering lost hosts")
    return {
        f"EC2 fetch+trim {count} (stubbed pages) s": fetch_s,
        f"inventory mapping {count} s": map_s,
        f"ssh config render {count} s": render_s,
    }


TARGETS = {"inventory mapping": "<= 0.3 s", "ssh config render": "<= 0.5 s"}


def target_of(figure: str) -> str:
    return next((t for k, t in TARGETS.items() if figure.startswith(k)), "")


def report(figures: dict[str, float]) -> None:
    for figure, seconds in figures.items():
        print(f"{figure:<44}{seconds:>10.3f}  {target_of(figure)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    report(run(args.count, args.repeat))


if __name__ == "__main__":
    main()
