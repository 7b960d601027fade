"""A foreground tunnel through the real lab ends on SIGTERM under --debug: "Tunnel closed.",
exit 0, no internal error (it used to end in `internal error: _Terminated`)."""

from __future__ import annotations

import signal
from pathlib import Path

import pymysql
import pytest

from bastionctl.lab import LabInfo

from .helpers import TunnelProcess, free_port, listening, mysql_login

pytestmark = pytest.mark.lab


def test_sigterm_under_debug_closes_a_mysql_tunnel(lab: LabInfo, bulk_config: Path) -> None:
    port = free_port()
    args = ["--debug", "--config", str(bulk_config), "tunnel", "mysql", "server-02"]
    tunnel = TunnelProcess([*args, "--local-port", str(port)])
    tunnel.start()
    try:
        assert tunnel.ready, (tunnel.stdout_lines, tunnel.stderr_text)
        login = mysql_login(lab)
        with (
            pymysql.connect(
                host="127.0.0.1", port=port, user=login["user"], password=login["password"]
            ) as conn,
            conn.cursor() as cursor,
        ):
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
        assert tunnel.proc is not None
        tunnel.proc.send_signal(signal.SIGTERM)
        tunnel.proc.wait(timeout=30)
    finally:
        code = tunnel.stop()
    assert code == 0, tunnel.stderr_text[-2000:]
    assert "".join(tunnel.stdout_lines).rstrip().endswith("Tunnel closed.")
    assert "internal error" not in tunnel.stderr_text
    assert not listening(port)
