"""The doctor's DNS verdicts against real unbound resolvers, name by name."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bastionctl.config import parse_config
from bastionctl.dns import Resolver, discover_dns64
from bastionctl.doctor import Status, dns64_check, endpoint_dns, name_check

from .unbound import ZONE, Unbound

INVENTORY = f"""
[bastions.server-01]
ipv6 = "fd00:bc1:2:1::2"
ipv4 = "10.213.2.2"
fqdn = "server-01.{ZONE}"
user = "op"

[hosts.server-02]
ipv6 = "fd00:bc1:2:2::2"
fqdn = "server-02.{ZONE}"
user = "op"

[hosts.server-03]
ipv6 = "fd00:bc1:2:2::3"
fqdn = "server-03.{ZONE}"
user = "op"

[hosts.server-04]
ipv6 = "fd00:bc1:2:2::4"
fqdn = "server-04.{ZONE}"
user = "op"
"""

# (resolver, endpoint) -> (status, words the detail must contain)
EXPECTED = {
    ("plain", "server-01"): (Status.OK, "matches the inventory"),
    ("plain", "server-02"): (Status.OK, "matches the inventory"),
    ("plain", "server-03"): (Status.FAIL, "stale: DNS says fd00:bc1:2:2::33"),
    ("plain", "server-04"): (Status.FAIL, "missing AAAA"),
    ("wkp", "server-02"): (Status.OK, "matches the inventory"),
    ("wkp", "server-03"): (Status.FAIL, "stale"),
    ("wkp", "server-04"): (
        Status.WARN,
        "only a DNS64-synthesised AAAA 64:ff9b::c000:204 (embeds 192.0.2.4",
    ),
    ("nsp", "server-04"): (Status.WARN, "(embeds 192.0.2.4"),
}


@pytest.mark.parametrize(("which", "alias"), sorted(EXPECTED))
def test_endpoint_verdicts(resolvers: dict[str, Unbound], which: str, alias: str) -> None:
    config = parse_config(INVENTORY, Path("inventory.toml"))
    endpoint = {**config.inventory.bastions, **config.inventory.hosts}[alias]
    resolver = Resolver([resolvers[which].server])
    [aaaa, *rest] = endpoint_dns(endpoint, resolver, discover_dns64(resolver))
    status, words = EXPECTED[(which, alias)]
    assert (aaaa.status, aaaa.check) == (status, f"AAAA {alias}.{ZONE}")
    assert words in aaaa.detail, aaaa
    if alias == "server-01":
        assert [c.status for c in rest] == [Status.OK]  # the A record matches too


@pytest.mark.parametrize(
    ("which", "name", "status", "words"),
    [
        ("plain", "legacy", Status.FAIL, "no AAAA at all"),
        (
            "wkp",
            "legacy",
            Status.WARN,
            "only synthesised by DNS64: 64:ff9b::c000:20a (embeds 192.0.2.10)",
        ),
        ("nsp", "legacy", Status.WARN, "(embeds 192.0.2.10)"),
        ("wkp", "dual", Status.OK, "native AAAA 2001:db8::10"),
        ("plain", "missing", Status.FAIL, "does not exist"),
    ],
)
def test_name_verdicts(
    resolvers: dict[str, Unbound], which: str, name: str, status: Status, words: str
) -> None:
    resolver = Resolver([resolvers[which].server])
    check = name_check(f"{name}.{ZONE}", resolver, discover_dns64(resolver))
    assert check.status is status and words in check.detail, check


def test_dns64_prefixes_are_reported(resolvers: dict[str, Unbound]) -> None:
    for which, expected in (
        ("plain", "no DNS64"),
        ("wkp", "64:ff9b::/96"),
        ("nsp", "fd64:1:2:3::/64"),
    ):
        resolver = Resolver([resolvers[which].server])
        assert expected in dns64_check(resolver, discover_dns64(resolver)).detail


def test_resolver_timeout_is_a_failure_named_as_such() -> None:
    config = parse_config(INVENTORY, Path("inventory.toml"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        resolver = Resolver([f"127.0.0.1:{silent.getsockname()[1]}"], timeout=0.5)
        [check] = endpoint_dns(
            config.inventory.hosts["server-02"], resolver, discover_dns64(resolver)
        )[:1]
    assert check.status is Status.FAIL and "resolver timeout" in check.detail


def test_cli_name_check_json_and_exit_code(resolvers: dict[str, Unbound], tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[settings]\ndns_servers = ["{resolvers["wkp"].server}"]\n' + INVENTORY)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bastionctl",
            "--config",
            str(config),
            "doctor",
            "--json",
            "--name",
            f"legacy.{ZONE}",
            "--name",
            f"dual.{ZONE}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr  # warnings only
    checks = json.loads(run.stdout)
    assert [c["status"] for c in checks] == ["ok", "warn", "ok"]
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "bastionctl",
            "--config",
            str(config),
            "doctor",
            "--name",
            f"missing.{ZONE}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert "FAIL" in missing.stdout and "does not exist" in missing.stdout


@pytest.mark.root
def test_dns64_without_a_nat64_route_is_flagged(resolvers: dict[str, Unbound]) -> None:
    from bastionctl.doctor import nat64_route_check

    resolver = Resolver([resolvers["wkp"].server])
    view = discover_dns64(resolver)
    route = ["ip", "-6", "route", "add", "unreachable", "64:ff9b::/96", "metric", "1"]
    added = subprocess.run(route, capture_output=True).returncode == 0
    if not added:
        if os.environ.get("CI"):
            pytest.fail("cannot add a route under CI (root expected)")
        pytest.skip("cannot add a route here (not root)")
    try:
        check = nat64_route_check(view)
    finally:
        subprocess.run(["ip", "-6", "route", "del", *route[4:]], check=True)
    assert check is not None and check.status is Status.WARN
    assert "no route" in check.detail and "64:ff9b::/96" in check.detail


def test_a_resolver_that_does_not_answer_is_not_reported_as_no_dns64() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    # Nothing listens there once the probe socket is closed.
    resolver = Resolver([f"127.0.0.1:{closed}"], timeout=0.3)
    check = dns64_check(resolver, discover_dns64(resolver))
    assert check.status is Status.FAIL
    assert "did not answer ipv4only.arpa" in check.detail


async def test_tui_details_show_the_dns_state(
    resolvers: dict[str, Unbound], tmp_path: Path
) -> None:
    from bastionctl.tui.app import create_app
    from bastionctl.tui.host_details import HostDetails

    config = tmp_path / "c.toml"
    config.write_text(f'[settings]\ndns_servers = ["{resolvers["plain"].server}"]\n' + INVENTORY)
    tui = create_app(config, watch_others=False)
    async with tui.run_test() as pilot:
        details = tui.query_one(HostDetails)

        def dns() -> str:
            return dict(details.pairs).get("DNS", "")

        for _ in range(100):
            await pilot.pause(0.05)
            if details.alias == "server-01" and "checking" not in dns() and dns():
                break
        assert "ok" in dns() and "matches the inventory" in dns()
        await pilot.press("down", "down")  # server-03: DNS has a stale address
        for _ in range(100):
            await pilot.pause(0.05)
            if details.alias == "server-03" and "checking" not in dns() and dns():
                break
        assert "fail" in dns() and "stale" in dns()
