"""Cache TTL, corrupt and stale caches, the paginator, and boto3 staying out of fast paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from bastionctl.config import load_config
from bastionctl.inventory import cache, ec2_fetch
from bastionctl.inventory.load import load_inventory
from tests.ec2 import world
from tests.ec2.conftest import Aws


def config_for(tmp_path: Path, url: str, regions: str = '["eu-central-1"]') -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        "[inventory]\ncache_ttl = 300\n\n"
        f'[[ec2]]\nprofile = "prod"\nregions = {regions}\nendpoint_url = "{url}"\n'
    )
    return path


def test_cache_ttl_refresh_and_corruption(aws: Aws, tmp_path: Path) -> None:
    config = load_config(config_for(tmp_path, aws.url))
    fetched: list[str] = []
    clock = [1_000_000.0]

    def load(refresh: bool = False) -> list[str]:
        fetched.clear()
        loaded = load_inventory(
            config, refresh=refresh, progress=fetched.append, now=lambda: clock[0]
        )
        assert "server-03" in loaded.config.inventory.hosts
        return loaded.warnings

    load()
    assert len(fetched) == 1
    load()
    assert fetched == [], "a fresh cache is used without asking EC2"
    load(refresh=True)
    assert len(fetched) == 1
    clock[0] += 301
    load()
    assert len(fetched) == 1, "an expired cache is fetched again"

    cache_files = list(Path(aws.home / "cache" / "bastionctl" / "ec2").glob("*.json"))
    assert len(cache_files) == 1
    assert cache_files[0].stat().st_mode & 0o777 == 0o600
    cache_files[0].write_text('{"version": 1, "regions": {"eu-central-1": [')
    warnings = load()
    assert any("is unreadable (not JSON); ignored" in w for w in warnings)
    assert len(fetched) == 1
    assert json.loads(cache_files[0].read_text())["version"] == cache.VERSION
    cache_files[0].write_text('{"version": 1, "regions": {"eu-central-1": {"fetched_at": "x"}}}')
    assert any("is corrupt; ignored" in w for w in load())


def test_a_failed_fetch_falls_back_to_the_cached_answer(aws: Aws, tmp_path: Path) -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        made = world.Made()
        region = world.Region(url, "eu-west-1", "2a05:d018:1", 60)
        region.instance(made, "b", name="bastion-x", suffix=1, public=True, role="bastion")
        region.instance(made, "h", name="host-x", suffix=2)
        config = load_config(config_for(tmp_path, url, '["eu-west-1"]'))
        assert "host-x" in load_inventory(config).config.inventory.hosts
    finally:
        server.stop()
    loaded = load_inventory(config, refresh=True)
    assert "host-x" in loaded.config.inventory.hosts
    assert any(
        "ec2 prod/eu-west-1: endpoint unreachable" in w and "using the cached answer" in w
        for w in loaded.warnings
    ), loaded.warnings


@pytest.fixture(scope="module")
def bulk(moto_url: str) -> int:
    world.build_bulk(moto_url, count=1000, per_reservation=4)
    return 1000


def test_a_thousand_instances_come_through_the_paginator(
    aws: Aws, bulk: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ec2_fetch, "PAGE_SIZE", 100)
    config = load_config(config_for(tmp_path, aws.url, f'["{world.BULK_REGION}"]'))
    lines: list[str] = []
    loaded = load_inventory(config, progress=lines.append)
    inventory = loaded.config.inventory
    assert len(inventory.hosts) == bulk
    assert list(inventory.bastions) == ["bulk-bastion"]
    # 251 reservations in pages of 100.
    assert len(lines) == 1
    assert lines[0].startswith(f"ec2 prod/{world.BULK_REGION}: {bulk + 1} instances (3 pages)")


IMPORT_PROBE = """
import sys
sys.argv = ["bastionctl", *sys.argv[1:]]
from bastionctl.cli import main
try:
    main()
except SystemExit:
    pass
print("boto3 imported" if "boto3" in sys.modules else "boto3 not imported", file=sys.stderr)
"""


def probe(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, *args], capture_output=True, text=True, timeout=60
    )
    return result.stderr.strip().splitlines()[-1]


def test_boto3_is_imported_only_to_fetch(aws: Aws, tmp_path: Path) -> None:
    static = tmp_path / "static.toml"
    static.write_text(
        '[bastions.b]\nipv6 = "2001:db8::1"\nuser = "admin"\n\n'
        '[hosts.h]\nipv6 = "2001:db8::2"\nuser = "u"\n'
    )
    assert probe("--help") == "boto3 not imported"
    for command in (["hosts", "--json"], ["ssh-config"], ["bastion-hosts"], ["tunnel", "list"]):
        assert probe("--config", str(static), *command) == "boto3 not imported", command
    ec2 = config_for(tmp_path, aws.url)
    assert probe("--config", str(ec2), "hosts", "--json") == "boto3 imported"
    # The cache is fresh now: no AWS call, no boto3.
    assert probe("--config", str(ec2), "hosts", "--json") == "boto3 not imported"
