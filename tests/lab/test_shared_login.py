"""One login per bastion for the user's foreground tunnels, against the lab's bastion as the
user with google-authenticator's defaults (one login per code, 3 logins per 30 s): the tunnels
are the agent's, attached to their terminals, and the agent keeps a login for `persist`.

Logins are counted in the bastion's sshd log (Accepted keyboard-interactive/pam).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

from bastionctl.lab import LabInfo

from .conftest import OpPacer
from .helpers import LogWatch, TunnelProcess, free_port, listening, run_cli, store_secret
from .helpers import write_config as lab_config
from .test_manager import wait_for
from .test_tunnel import echo_roundtrip

pytestmark = pytest.mark.lab
KIB = 1024


def accepted(watch: LogWatch, user: str) -> int:
    time.sleep(0.3)  # sshd writes its log line just after the login
    return sum(f"Accepted keyboard-interactive/pam for {user}" in x for x in watch.lines())


def op_config(lab: LabInfo, path: Path, persist: float | None = None) -> Path:
    config = lab_config(lab, path, bulk=False, persist=persist)
    store_secret(config, lab.read_secret(bulk=False))
    return config


def tunnel(config: Path, service: str, host: str, env: dict[str, str]) -> TunnelProcess:
    args = ["--config", str(config), "tunnel", service, host, "--local-port", str(free_port())]
    return TunnelProcess(args, env=env)


def up(process: TunnelProcess) -> TunnelProcess:
    process.start()
    assert process.ready, (process.stdout_lines, process.stderr_text)
    return process


def logins_listed(env: dict[str, str]) -> list[dict[str, object]]:
    result = run_cli("tunnel", "list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    logins: list[dict[str, object]] = json.loads(result.stdout)["logins"]
    return logins


def test_two_terminals_share_one_login_and_ctrl_c_closes_only_its_own(
    lab: LabInfo, tmp_path: Path, env_with: dict[str, str], op_pacer: OpPacer
) -> None:
    config = op_config(lab, tmp_path / "op.toml")
    op_pacer.wait()
    watch = LogWatch(lab.bastion_sshd_log)
    first = up(tunnel(config, "mssql", "server-03", env_with))
    second: TunnelProcess | None = None
    try:
        asked = time.monotonic()
        second = up(tunnel(config, "rdp", "server-04", env_with))
        took = time.monotonic() - asked
        assert took <= 3.0, (took, second.stderr_text)
        assert "already used in this step" not in "".join(second.stdout_lines)
        port1, port2 = first.local_port(), second.local_port()
        for port in (port1, port2):
            sent, got, _ = echo_roundtrip(port, 64 * KIB)
            assert got == sent
        assert accepted(watch, lab.op_user) == 1
        assert second.proc is not None
        second.proc.send_signal(signal.SIGINT)  # Ctrl-C in the second terminal
        second.proc.wait(timeout=15)
        assert second.stop() == 130, second.stderr_text
        assert "".join(second.stdout_lines).rstrip().endswith("Tunnel closed.")
        assert not listening(port2) and listening(port1)
        sent, got, _ = echo_roundtrip(port1, 64 * KIB)
        assert got == sent
    finally:
        if second is not None:
            second.stop()
        code = first.stop()
    assert code == 0, first.stderr_text
    assert accepted(watch, lab.op_user) == 1


def test_four_terminals_in_ten_seconds_log_in_once(
    lab: LabInfo, tmp_path: Path, env_with: dict[str, str], op_pacer: OpPacer
) -> None:
    config = op_config(lab, tmp_path / "op.toml")
    op_pacer.wait()
    watch = LogWatch(lab.bastion_sshd_log)
    wanted = [("mssql", "server-03"), ("rdp", "server-04")] * 2
    tunnels = [tunnel(config, service, host, env_with) for service, host in wanted]
    starters = [threading.Thread(target=t.start) for t in tunnels]
    try:
        for starter in starters:
            starter.start()
            time.sleep(2.0)  # four terminals in (well under) ten seconds
        for starter in starters:
            starter.join(60)
        assert all(t.ready for t in tunnels), [(t.stdout_lines, t.stderr_text) for t in tunnels]
        for t in tunnels:
            sent, got, _ = echo_roundtrip(t.local_port(), 16 * KIB)
            assert got == sent
    finally:
        codes = [t.stop() for t in tunnels]
    assert codes == [0, 0, 0, 0], [t.stderr_text for t in tunnels]
    assert accepted(watch, lab.op_user) == 1


def test_within_persist_no_code_and_after_it_one_login(
    lab: LabInfo, tmp_path: Path, env_with: dict[str, str], op_pacer: OpPacer
) -> None:
    """The closing tunnel's `persist` decides how long its login stays: 600 s (the default)
    after the first, 2 s after the second (its config says persist = 2)."""
    long = op_config(lab, tmp_path / "op.toml")
    short = lab_config(lab, tmp_path / "op-2s.toml", bulk=False, persist=2)
    op_pacer.wait()
    watch = LogWatch(lab.bastion_sshd_log)
    first = up(tunnel(long, "mysql", "server-02", env_with))
    assert first.stop() == 0, first.stderr_text
    assert accepted(watch, lab.op_user) == 1
    [idle] = logins_listed(env_with)
    assert idle["tunnels"] == 0 and isinstance(idle["closes_in"], float)
    # Within persist: no code (stdin is /dev/null, so a question would fail the tunnel).
    second = up(tunnel(short, "mssql", "server-03", env_with))
    assert second.stop() == 0, second.stderr_text
    assert accepted(watch, lab.op_user) == 1
    # The second closed with persist = 2: its login goes 2 s later.
    assert wait_for(lambda: logins_listed(env_with) == [], 8)
    op_pacer.wait()
    third = up(tunnel(long, "mysql", "server-02", env_with))
    assert third.stop() == 0, third.stderr_text
    assert accepted(watch, lab.op_user) == 2
