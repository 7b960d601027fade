"""Client launch, .rdp files and listen addresses, against the lab."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bastionctl.lab import LabInfo

from .helpers import TunnelProcess, free_port, listening, run_cli
from .test_tunnel import echo_roundtrip

pytestmark = pytest.mark.lab


def test_launch_mysql_runs_the_real_client_over_tcp(
    lab: LabInfo, bulk_config: Path, tmp_path: Path
) -> None:
    home = tmp_path / "operator"
    home.mkdir()
    # The password comes from the operator's own ~/.my.cnf, never from bastionctl's argv.
    (home / ".my.cnf").write_text(lab.mysql_defaults_file.read_text())
    (home / ".my.cnf").chmod(0o600)
    env = {**os.environ, "HOME": str(home)}
    port = free_port()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bastionctl",
            "--config",
            str(bulk_config),
            "tunnel",
            "mysql",
            "server-02",
            "--local-port",
            str(port),
            "--launch",
            "--",
            "-N",
            "-B",
            "-e",
            "SELECT msg FROM greetings WHERE id = 1",
            lab.mysql_database,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert "hello from server-02" in result.stdout
    assert "Client exited with status 0; tunnel closed." in result.stdout
    assert not listening(port)


def test_missing_client_names_the_package_and_the_tunnel_stays_up(
    lab: LabInfo, bulk_config: Path
) -> None:
    port = free_port()
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no sqlcmd anywhere here
    args = [
        "--config",
        str(bulk_config),
        "tunnel",
        "mssql",
        "server-03",
        "--local-port",
        str(port),
        "--launch",
    ]
    with TunnelProcess(args, env=env) as tunnel:
        sent, got, _ = echo_roundtrip(port, 1 << 20)
        assert got == sent
    assert "the client sqlcmd is not installed; install mssql-tools18" in tunnel.stderr_text


def test_rdp_file_points_at_the_tunnel(lab: LabInfo, bulk_config: Path, tmp_path: Path) -> None:
    port = free_port()
    rdp = tmp_path / "server-03.rdp"
    args = [
        "--config",
        str(bulk_config),
        "tunnel",
        "rdp",
        "server-03",
        "--local-port",
        str(port),
        "--rdp-file",
        str(rdp),
    ]
    with TunnelProcess(args):
        text = rdp.read_bytes().decode()
    assert f"full address:s:127.0.0.1:{port}\r\n" in text
    assert rdp.stat().st_mode & 0o777 == 0o600


def test_dual_loopback_and_ipv6_loopback(lab: LabInfo, bulk_config: Path) -> None:
    port = free_port()
    args = [
        "--config",
        str(bulk_config),
        "tunnel",
        "mssql",
        "server-04",
        "--local-port",
        str(port),
        "--bind",
        "localhost",
    ]
    with TunnelProcess(args) as tunnel:
        assert f"127.0.0.1:{port} and [::1]:{port}" in "".join(tunnel.stdout_lines)
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family) as conn:
                conn.connect((address, port))
                conn.sendall(b"ping")
                assert conn.recv(4) == b"ping"


def test_non_loopback_bind_needs_an_explicit_flag(lab: LabInfo, bulk_config: Path) -> None:
    refused = run_cli(
        "--config",
        str(bulk_config),
        "tunnel",
        "mssql",
        "server-04",
        "--bind",
        lab.bastion_ipv4.rsplit(".", 1)[0] + ".1",
    )
    assert refused.returncode == 2
    assert "add --allow-non-loopback" in refused.stderr


def test_local_ports_are_stable_and_a_taken_one_moves_to_the_next(
    lab: LabInfo, bulk_config: Path
) -> None:
    base = ["--config", str(bulk_config), "tunnel", "mssql", "server-04"]
    assert not listening(51433) and not listening(51434), "seed ports taken on this machine"
    with TunnelProcess(base) as first:
        assert first.local_port() == 51433  # the seed's scheme by default
        with TunnelProcess(base) as second:
            moved = second.local_port()
            # Usually 51434; an outgoing connection may hold it (5xxxx is in the ephemeral range).
            assert 51434 <= moved < 51433 + 20
        assert f"local port 51433 is in use; using {moved} instead" in second.stderr_text
    # A free port, not a fixed one: earlier tests' outgoing connections may hold any port
    # of the ephemeral range for a while.
    port = free_port()
    with TunnelProcess([*base, "--local-port", str(port)]) as chosen:
        assert chosen.local_port() == port, chosen.stderr_text
    with TunnelProcess(base) as again:
        assert again.local_port() == port  # remembered across runs
    taken = run_cli(*base, "--local-port", str(port), "--detach")
    assert taken.returncode == 0
    clash = run_cli(*base, "--local-port", str(port))
    assert clash.returncode == 1 and f"local port {port} is already in use" in clash.stderr
    assert run_cli("tunnel", "stop", "--all").returncode == 0
