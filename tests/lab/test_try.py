"""scripts/try's tunnel half (scripts/try-tunnel) against the lab: whatever port the tunnel
gets, remembered, taken or the scheme's, the demo query goes through it; a failed query says
so with the tunnel's own last lines."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bastionctl.lab import LabInfo

from .helpers import TunnelProcess, free_port

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


def try_tunnel(config: Path, defaults: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ.copy()
    env.update(
        BASTIONCTL_CONFIG=str(config),
        BASTIONCTL=f"{sys.executable} -m bastionctl",
        PYTHON=sys.executable,
    )
    return subprocess.run(
        [str(REPO / "scripts" / "try-tunnel"), str(defaults)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_try_works_twice_and_after_a_local_port_tunnel(lab: LabInfo, bulk_config: Path) -> None:
    for _ in range(2):
        run = try_tunnel(bulk_config, lab.mysql_defaults_file)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "hello from server-02" in run.stdout
    chosen = free_port()
    args = ["--config", str(bulk_config), "tunnel", "mysql", "server-02"]
    with TunnelProcess([*args, "--local-port", str(chosen)]) as tunnel:
        assert tunnel.local_port() == chosen, tunnel.stderr_text
    # The remembered port is taken by another socket now, as in the report that led here.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", chosen))
        holder.listen()
        run = try_tunnel(bulk_config, lab.mysql_defaults_file)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "hello from server-02" in run.stdout
    assert f"local port {chosen} is in use" in run.stderr
    assert (
        f"server-02/mysql uses remembered local port {chosen} (chosen with --local-port on "
        in run.stderr
    )
    assert "bastionctl tunnel ports --forget server-02/mysql" in run.stderr
    # And with nothing in its way, on the remembered port itself.
    run = try_tunnel(bulk_config, lab.mysql_defaults_file)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"127.0.0.1:{chosen}" in run.stdout


def test_try_says_when_the_demo_query_fails(
    lab: LabInfo, bulk_config: Path, tmp_path: Path
) -> None:
    wrong = tmp_path / "my.cnf"
    wrong.write_text("[client]\nuser=lab\npassword=not-the-password\n")
    run = try_tunnel(bulk_config, wrong)
    assert run.returncode == 1
    assert "try: the demo query through 127.0.0.1:" in run.stderr
    assert "try: the tunnel's last lines:" in run.stderr
    assert "Tunnel open: mysql on server-02" in run.stderr.split("last lines:", 1)[1]
