"""TunnelManager against the lab: one bastion login for many tunnels, recovery from faults."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bastionctl.config import load_config
from bastionctl.lab import LabInfo
from bastionctl.model import TunnelSpec
from bastionctl.otp import OtpSecret, SecretStore, UsedSteps, parse_secret
from bastionctl.ssh.connect import Session
from bastionctl.tunnels.manager import TunnelManager
from bastionctl.tunnels.protocol import TunnelEvent, TunnelState

from .helpers import LogWatch, free_port, write_config
from .test_tunnel import echo_roundtrip

pytestmark = pytest.mark.lab
MIB = 1024 * 1024


class LabSecrets(SecretStore):
    """The lab's TOTP secret without a keyring (the SSH side stays entirely real)."""

    def __init__(self, secret: str) -> None:
        self.secret = parse_secret(secret)

    def get(self, bastion: str) -> OtpSecret | None:
        return self.secret


def manager_for(
    lab: LabInfo, tmp_path: Path, events: list[TunnelEvent]
) -> tuple[TunnelManager, dict[str, TunnelSpec], Session]:
    config = load_config(write_config(lab, tmp_path / "bulk.toml", bulk=True))
    settings = config.settings.__class__(
        known_hosts=config.settings.known_hosts, connect_timeout=5, keepalive_interval=1
    )
    session = Session(
        settings=settings,
        ask=lambda prompt, echo: pytest.fail(f"asked {prompt!r}"),
        notify=lambda message: None,
        secrets=LabSecrets(lab.read_secret(bulk=True)),
        used_steps=UsedSteps(tmp_path / "steps.json"),
    )
    inventory = config.inventory
    specs = {}
    for name, host, service in (
        ("rdp4", "server-04", "rdp"),
        ("mssql4", "server-04", "mssql"),
        ("mssql3", "server-03", "mssql"),
    ):
        svc = config.services.get(service)
        target = inventory.hosts[host]
        specs[name] = TunnelSpec(
            host=target,
            bastion=inventory.bastion_for(target),
            remote_port=svc.remote_port,
            local_port=free_port(),
            service=svc,
        )
    return TunnelManager(events.append, process="foreground"), specs, session


def kinteractive_logins(watch: LogWatch) -> int:
    return sum("Accepted keyboard-interactive" in line for line in watch.lines())


def test_three_tunnels_two_hosts_one_totp_login(lab: LabInfo, tmp_path: Path) -> None:
    events: list[TunnelEvent] = []
    manager, specs, session = manager_for(lab, tmp_path, events)
    watch = LogWatch(lab.bastion_sshd_log)
    with manager:
        first = manager.open(specs["rdp4"], session)
        timings = []
        for name in ("mssql4", "mssql3"):
            started = time.perf_counter()
            manager.open(specs[name], session)
            timings.append(time.perf_counter() - started)
        for tunnel in manager.list():
            sent, got, count = echo_roundtrip(tunnel.local_port, 4 * MIB)
            assert (got, count) == (sent, 4 * MIB)
        assert manager.bastion_logins("server-01") == 1
        assert [t.state for t in manager.list()] == [TunnelState.UP] * 3
        assert first.local_port == specs["rdp4"].local_port
    time.sleep(0.3)
    assert kinteractive_logins(watch) == 1
    assert max(timings) <= 0.3, timings  # no TOTP, no new bastion login
    assert {e.state for e in events} >= {TunnelState.UP, TunnelState.CLOSED}


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_killed_bastion_session_reconnects_on_the_same_port(lab: LabInfo, tmp_path: Path) -> None:
    import os
    import signal

    events: list[TunnelEvent] = []
    manager, specs, session = manager_for(lab, tmp_path, events)
    threads_before = threading.active_count()
    with manager:
        tunnel = manager.open(specs["mssql3"], session)
        port = tunnel.local_port
        sent, got, _ = echo_roundtrip(port, 4 * MIB)
        assert got == sent
        # The session is the monitor ([priv]) and its unprivileged child: kill both.
        sessions = children_of(lab.pids["server-01 sshd"])
        sessions += [grandchild for pid in sessions for grandchild in children_of(pid)]
        assert sessions, "no bastion session process to kill"
        for pid in sessions:
            os.kill(pid, signal.SIGKILL)
        # The event, not the state: recovery can be quicker than a poll.
        assert wait_for(lambda: TunnelState.RECONNECTING in {e.state for e in events}, 10), events
        assert wait_for(lambda: tunnel.state is TunnelState.UP, 10), events
        assert tunnel.local_port == port
        sent, got, count = echo_roundtrip(port, 8 * MIB)
        assert (got, count) == (sent, 8 * MIB)
        assert manager.bastion_logins("server-01") == 2  # one login for the recovery
    assert wait_for(lambda: threading.active_count() <= threads_before + 1, 10)
