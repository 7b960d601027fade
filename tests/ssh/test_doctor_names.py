"""`doctor` for endpoints known by name only (the reference names its bastion `01.example.com`):
the name is resolved through the configured resolver (a real unbound) to AAAA and A, and the
SSH port is tried over each family, naming the address; with --deep, the same for a host on the
path through the bastion."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dns.unbound import ZONE, Unbound
from tests.lab.helpers import run_cli
from tests.ssh.helpers import CLI_TIMEOUT
from tests.ssh.world import BASTION, World

NAME = f"loopback.{ZONE}"  # AAAA ::1, A 127.0.0.1 in the unbound zone


def dual_stack_pair(tries: int = 20) -> tuple[socket.socket, socket.socket]:
    """Sockets bound to one port on 127.0.0.1 and ::1. The port the kernel picks for IPv4 may
    be taken on ::1 (another test's connection): then another port."""
    for _ in range(tries):
        v4 = socket.socket(socket.AF_INET)
        v4.bind(("127.0.0.1", 0))
        v6 = socket.socket(socket.AF_INET6)
        try:
            v6.bind(("::1", v4.getsockname()[1]))
        except OSError:
            v4.close()
            v6.close()
            continue
        return v4, v6
    raise RuntimeError(f"no port free on both 127.0.0.1 and ::1 in {tries} tries")


@pytest.fixture
def dual_stack_sshd() -> Iterator[int]:
    """A port on both ::1 and 127.0.0.1 that greets every connection with an SSH banner."""
    v4, v6 = dual_stack_pair()
    port = int(v4.getsockname()[1])
    stop = threading.Event()

    def serve(listener: socket.socket) -> None:
        listener.listen(8)
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _peer = listener.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"SSH-2.0-TestBanner\r\n")

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in (v4, v6)]
    for thread in threads:
        thread.start()
    try:
        yield port
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        v4.close()
        v6.close()


def doctor_json(config: Path, *args: str) -> tuple[int, list[dict[str, str]]]:
    result = run_cli("--config", str(config), "doctor", "--json", *args, timeout=CLI_TIMEOUT)
    assert result.stderr == "", result.stderr
    return result.returncode, json.loads(result.stdout)


def rows(checks: list[dict[str, str]], prefix: str) -> dict[str, dict[str, str]]:
    return {c["check"]: c for c in checks if c["check"].startswith(prefix)}


def test_a_bastion_known_by_name_is_tried_over_each_family(
    resolvers: dict[str, Unbound], tmp_path: Path, dual_stack_sshd: int
) -> None:
    config = tmp_path / "named.toml"
    config.write_text(
        f'[settings]\ndns_servers = ["{resolvers["plain"].server}"]\nconnect_timeout = 2\n\n'
        f'[bastions.{BASTION}]\nfqdn = "{NAME}"\nport = {dual_stack_sshd}\nuser = "op"\n'
    )
    _code, checks = doctor_json(config)
    ssh = rows(checks, "ssh over")
    assert set(ssh) == {"ssh over IPv6", "ssh over IPv4"}, checks
    v6, v4 = ssh["ssh over IPv6"], ssh["ssh over IPv4"]
    assert v6["status"] == v4["status"] == "ok", ssh
    assert v6["detail"].startswith(f"[::1]:{dual_stack_sshd} (AAAA of {NAME}) in ")
    assert v4["detail"].startswith(f"127.0.0.1:{dual_stack_sshd} (A of {NAME}) in ")
    assert v6["detail"].endswith("SSH-2.0-TestBanner")


def test_a_name_that_has_no_address_fails_the_ssh_row(
    resolvers: dict[str, Unbound], tmp_path: Path
) -> None:
    config = tmp_path / "missing.toml"
    config.write_text(
        f'[settings]\ndns_servers = ["{resolvers["plain"].server}"]\n\n'
        f'[bastions.{BASTION}]\nfqdn = "nothing.{ZONE}"\nuser = "op"\n'
    )
    code, checks = doctor_json(config)
    assert code == 1
    [row] = [c for c in checks if c["check"] == "ssh"]
    assert row["status"] == "fail"
    assert row["detail"].startswith(f"nothing.{ZONE} has neither an AAAA nor an A record")


def test_deep_tries_a_host_known_by_name_over_each_family_through_the_bastion(
    ssh_world: World, bulk_config: Path, resolvers: dict[str, Unbound]
) -> None:
    target = ssh_world.targets["server-02"].port
    text = bulk_config.read_text().replace(
        "[settings]\n", f'[settings]\ndns_servers = ["{resolvers["plain"].server}"]\n', 1
    )
    host_block = '[hosts.server-02]\nipv4 = "127.0.0.1"\n'
    assert host_block in text
    bulk_config.write_text(text.replace(host_block, f'[hosts.server-02]\nfqdn = "{NAME}"\n'))
    code, checks = doctor_json(bulk_config, "server-02", "--deep")
    channels = rows(checks, "channel to")
    v4 = channels[f"channel to 127.0.0.1:{target} (A of {NAME})"]
    v6 = channels[f"channel to [::1]:{target} (AAAA of {NAME})"]
    assert v4["status"] == "ok" and v4["detail"].startswith("sshd answers: SSH-2.0-"), v4
    # The test bastion forwards to 127.0.0.1 only: the IPv6 path is refused, and said so.
    assert v6["status"] == "fail" and "refuses to forward" in v6["detail"], v6
    assert code == 1
