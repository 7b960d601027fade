"""TunnelManager against the in-process bastion and targets: shared logins, faults, recovery.

The world (tests.ssh.conftest's ssh_world) lives for the whole session, so what its servers
record is compared as a delta around each step, for the `bulk` user only.
"""

from __future__ import annotations

import itertools
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from bastionctl.errors import PortInUseError
from bastionctl.lab.standin import pattern
from bastionctl.otp import OtpSecret, SecretStore, parse_secret
from bastionctl.ssh import datapath
from bastionctl.tunnels.manager import BACKOFF_CAP, BACKOFF_START, ManagedTunnel
from bastionctl.tunnels.protocol import TunnelState
from tests.lab.helpers import listening
from tests.ssh.faults import SlowLink
from tests.ssh.helpers import (
    MiB,
    Tunnels,
    connect,
    download,
    echo_roundtrip,
    occupy,
    port_free,
    read_line,
    saw,
    sha256,
    states,
    use_data_path,
    wait_for,
)
from tests.ssh.server import KBD, PUBLICKEY, AuthEvent
from tests.ssh.services import GREETING, free_port
from tests.ssh.world import BASTION, FaultBastion, World

USER = "bulk"
RETRYING = re.compile(r"retrying in ([0-9.]+) s")
JITTER = 0.2
# Threads of the test servers and services, which outlive a manager: not the manager's.
WORLD_THREADS = ("sshd-", "svc-", "faultproxy-")


@pytest.fixture(autouse=True)
def fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The path a manager installs by default, set for this test only (not for the process)."""
    use_data_path(monkeypatch, datapath.FAST)


@pytest.fixture
def tunnels(bulk_config: Path, tmp_path: Path) -> Iterator[Tunnels]:
    with Tunnels(bulk_config, tmp_path) as tunnels:
        yield tunnels


@pytest.fixture
def proxied(fault_bastion: FaultBastion, tmp_path: Path) -> Iterator[Tunnels]:
    """Tunnels whose bastion is reached through the fault proxy."""
    with Tunnels(fault_bastion.config, tmp_path) as tunnels:
        yield tunnels


class SwappableSecrets(SecretStore):
    """The keyring's secret until `swap()`: then another one, which the bastion rejects."""

    def __init__(self) -> None:
        self.replacement: OtpSecret | None = None

    def swap(self) -> None:
        self.replacement = parse_secret(pyotp.random_base32())

    def get(self, bastion: str) -> OtpSecret | None:
        return self.replacement or super().get(bastion)


def kbd_events(world: World, since: int) -> list[AuthEvent]:
    """The bastion's keyboard-interactive events for the bulk user, from index `since` on."""
    return [e for e in world.bastion.events[since:] if e.method == KBD and e.user == USER]


def kbd_logins(world: World) -> int:
    return world.bastion.logins(KBD, user=USER)


def target_logins(world: World, alias: str) -> int:
    return world.targets[alias].logins(PUBLICKEY, user=USER)


def greet(tunnel: ManagedTunnel) -> None:
    with connect(tunnel.local_port) as sock:
        assert sock.recv(len(GREETING), socket.MSG_WAITALL) == GREETING
        sock.sendall(b"ping\n")
        assert read_line(sock) == b"ping\n"


def carries_data(tunnel: ManagedTunnel, size: int = MiB) -> None:
    echo_roundtrip(tunnel.local_port, bytes(range(256)) * (size // 256))


def carrying(tunnels: Tunnels, host: str = "server-02") -> tuple[ManagedTunnel, int]:
    """An echo tunnel to `host`, checked to carry data; and how many events came so far."""
    tunnel = tunnels.open(host, "echo")
    carries_data(tunnel)
    return tunnel, len(tunnels.events)


def reconnecting(tunnels: Tunnels, seen: int) -> None:
    """The tunnels went RECONNECTING, after the first `seen` events, within 5 s.

    The event, not the state: recovery can be quicker than a poll.
    """
    reached = wait_for(lambda: saw(tunnels.events, TunnelState.RECONNECTING, seen), 5)
    assert reached, states(tunnels.events)


def back_up(tunnels: Tunnels, tunnel: ManagedTunnel, port: int, size: int = 4 * MiB) -> None:
    """`tunnel` is up again within 10 s, on its `port`, and carries `size` bytes."""
    assert wait_for(lambda: tunnel.state is TunnelState.UP, 10), states(tunnels.events)
    assert tunnel.local_port == port
    carries_data(tunnel, size)


def announced_delay(record: logging.LogRecord) -> float:
    """The X of a "...; retrying in X s" record."""
    found = RETRYING.search(record.getMessage())
    assert found is not None, record.getMessage()
    return float(found.group(1))


def manager_threads(before: set[threading.Thread]) -> list[str]:
    """Threads alive now that were not before and are not the test servers'."""
    return sorted(
        t.name
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.name.startswith(WORLD_THREADS)
    )


# --- one login for many tunnels ------------------------------------------------------------------


def test_three_tunnels_to_two_hosts_cost_one_keyboard_interactive_login(
    ssh_world: World, tunnels: Tunnels
) -> None:
    before = kbd_logins(ssh_world)
    targets_before = {alias: target_logins(ssh_world, alias) for alias in ssh_world.targets}
    echo2 = tunnels.open("server-02", "echo")
    assert kbd_logins(ssh_world) == before + 1
    # The second and third tunnels log in to nothing new on the bastion.
    greeter2 = tunnels.open("server-02", "greeter")
    assert kbd_logins(ssh_world) == before + 1
    echo3 = tunnels.open("server-03", "echo")
    assert kbd_logins(ssh_world) == before + 1
    assert tunnels.manager.bastion_logins(BASTION) == 1
    # One key login per target: both tunnels to server-02 share its transport.
    assert {a: target_logins(ssh_world, a) - n for a, n in targets_before.items()} == {
        "server-02": 1,
        "server-03": 1,
    }
    carries_data(echo2)
    greet(greeter2)
    carries_data(echo3)
    assert [t.state for t in tunnels.manager.list()] == [TunnelState.UP] * 3
    assert len({t.local_port for t in (echo2, greeter2, echo3)}) == 3
    assert kbd_logins(ssh_world) == before + 1
    assert tunnels.notes == []


# --- the bastion goes away -----------------------------------------------------------------------


def test_bastion_dropping_every_connection_reconnects_on_the_same_port(
    ssh_world: World, tunnels: Tunnels
) -> None:
    tunnel, seen = carrying(tunnels)
    port = tunnel.local_port
    assert ssh_world.bastion.drop_connections() >= 1
    reconnecting(tunnels, seen)
    assert wait_for(lambda: tunnel.state is TunnelState.UP, 10), states(tunnels.events)
    assert states(tunnels.events)[seen:] == [TunnelState.RECONNECTING, TunnelState.UP]
    assert tunnel.local_port == port
    carries_data(tunnel, 4 * MiB)
    assert tunnels.manager.bastion_logins(BASTION) == 2


def test_a_silent_dead_path_is_noticed_and_the_tunnel_comes_back(
    fault_bastion: FaultBastion, proxied: Tunnels
) -> None:
    tunnel, seen = carrying(proxied)
    port = tunnel.local_port
    fault_bastion.proxy.pause()
    try:
        # Nothing is closed: only the keepalive probes (1 s interval) can notice.
        reconnecting(proxied, seen)
        assert tunnel.info().errors == 0
        # The port stays bound; a client meanwhile waits for the path (connect_timeout 5 s).
        early = connect(port, timeout=10)
    finally:
        # Back well within connect_timeout (5 s): the reconnect under way completes.
        fault_bastion.proxy.resume()
    with early:
        early.sendall(b"held\n")
        assert read_line(early) == b"held\n"
    assert tunnel.info().errors == 0
    back_up(proxied, tunnel, port)
    assert proxied.manager.bastion_logins(BASTION) == 2


def test_a_dead_path_longer_than_a_connect_attempt_is_retried_and_the_tunnel_comes_back(
    fault_bastion: FaultBastion, proxied: Tunnels, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bastionctl.tunnels.manager")
    tunnel = proxied.open("server-02", "echo")
    port = tunnel.local_port
    seen = len(proxied.events)
    fault_bastion.proxy.pause()
    try:
        reconnecting(proxied, seen)
        timeout = proxied.config.settings.connect_timeout
        # The proxy accepts the new connection but carries nothing: the attempt times out.
        retried = wait_for(
            lambda: any(RETRYING.search(r.getMessage()) for r in caplog.records), timeout + 3
        )
        assert retried, f"no retry after a timed-out attempt: {tunnel.info()}"
        assert "server-01" in (tunnel.info().last_error or "")
    finally:
        fault_bastion.proxy.resume()
    back_up(proxied, tunnel, port, MiB)


def test_a_busy_slow_path_is_not_torn_down_by_its_own_keepalive(
    ssh_world: World, bulk_config: Path, tmp_path: Path
) -> None:
    # 512 KiB/s towards us: a 2 MiB channel window of data ahead of a probe's answer takes
    # ~4 s to drain, longer than the world's 1 s keepalive interval. The path works all along.
    size = 3 * MiB
    with SlowLink(ssh_world.bastion.port, rate=512 * 1024) as link:
        config = ssh_world.write_config(tmp_path / "slow.toml", USER, bastion_port=link.port)
        with Tunnels(config, tmp_path) as tunnels:
            tunnel = tunnels.open("server-02", "source")
            got = download(tunnel.local_port, size)
            assert states(tunnels.events) == [TunnelState.UP], tunnel.info()
            assert got == (size, sha256(pattern(size)))


def test_an_unreachable_bastion_is_retried_with_growing_capped_jittered_delays(
    fault_bastion: FaultBastion, proxied: Tunnels, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bastionctl.tunnels.manager")
    tunnel = proxied.open("server-02", "echo")
    carries_data(tunnel)
    # Gone for good: connections cut, and nothing listens on the proxy's port any more.
    fault_bastion.proxy.stop()
    fault_bastion.proxy.cut()

    def retries() -> list[logging.LogRecord]:
        return [r for r in list(caplog.records) if RETRYING.search(r.getMessage())]

    # 0.5 + 1 + 2 s of waits (each +-20 %) between the first four attempts, after ~1-2 s
    # for the keepalive to notice.
    assert wait_for(lambda: len(retries()) >= 4, 12), [r.getMessage() for r in retries()]
    records = retries()
    delays = [announced_delay(r) for r in records]
    for attempt, delay in enumerate(delays):
        base = min(BACKOFF_CAP, BACKOFF_START * 2**attempt)
        assert base * (1 - JITTER) - 0.05 <= delay <= base * (1 + JITTER) + 0.05, delays
        assert delay <= BACKOFF_CAP * (1 + JITTER) + 0.05
    # Each attempt came after the wait announced before it (a refused connect is instant).
    gaps = [b.created - a.created for a, b in itertools.pairwise(records)]
    for gap, delay in zip(gaps, delays, strict=False):
        assert delay - 0.1 <= gap <= delay + 1.0, (gaps, delays)
    assert tunnel.state is TunnelState.RECONNECTING
    last_error = tunnel.info().last_error or ""
    assert "bastion server-01" in last_error and str(fault_bastion.port) in last_error, last_error
    port = tunnel.local_port
    proxied.manager.close_all()
    assert tunnel.info().state is TunnelState.CLOSED
    assert port_free(port)


def test_a_login_rejected_during_a_reconnect_is_tried_once_and_the_tunnel_fails(
    ssh_world: World, bulk_config: Path, tmp_path: Path
) -> None:
    secrets = SwappableSecrets()
    with Tunnels(bulk_config, tmp_path, secrets=secrets) as tunnels:
        tunnel = tunnels.open("server-02", "echo")
        port = tunnel.local_port
        carries_data(tunnel)
        # The secret no longer matches the server's: the next login's code is wrong.
        secrets.swap()
        since = len(ssh_world.bastion.events)
        assert ssh_world.bastion.drop_connections() >= 1
        assert wait_for(lambda: tunnel.state is TunnelState.FAILED, 10), states(tunnels.events)
        assert "rejected" in (tunnel.last_error or ""), tunnel.last_error
        assert [e.outcome for e in kbd_events(ssh_world, since)] == ["failed"]
        assert wait_for(lambda: not listening(port), 2)
        # Room for a retry that must not happen (it would burn codes and feed fail2ban).
        time.sleep(3)
        assert [e.outcome for e in kbd_events(ssh_world, since)] == ["failed"]
        assert tunnel.state is TunnelState.FAILED
        assert states(tunnels.events)[-2:] == [TunnelState.RECONNECTING, TunnelState.FAILED]


# --- the target goes away ------------------------------------------------------------------------


def test_target_connections_dropped_recover_with_no_new_bastion_login(
    ssh_world: World, tunnels: Tunnels
) -> None:
    tunnel, seen = carrying(tunnels, "server-03")
    port = tunnel.local_port
    kbd_before = kbd_logins(ssh_world)
    key_before = target_logins(ssh_world, "server-03")
    assert ssh_world.targets["server-03"].drop_connections() >= 1
    reconnecting(tunnels, seen)
    back_up(tunnels, tunnel, port)
    # The bastion hop survived: no keyboard-interactive login, one new key login on the target.
    assert tunnels.manager.bastion_logins(BASTION) == 1
    assert kbd_logins(ssh_world) == kbd_before
    assert target_logins(ssh_world, "server-03") == key_before + 1


# --- life cycle ----------------------------------------------------------------------------------


def test_closing_the_manager_leaves_no_thread_behind_and_frees_the_ports(
    bulk_config: Path, tmp_path: Path
) -> None:
    before = set(threading.enumerate())
    with Tunnels(bulk_config, tmp_path) as tunnels:
        opened = [tunnels.open("server-02", "echo"), tunnels.open("server-03", "greeter")]
        ports = [t.local_port for t in opened]
        carries_data(opened[0])
        greet(opened[1])
        assert manager_threads(before)  # the manager's own, to be gone below
        assert not any(port_free(port) for port in ports)
    assert [t.state for t in opened] == [TunnelState.CLOSED] * 2
    assert wait_for(lambda: not manager_threads(before), 5), manager_threads(before)
    assert all(port_free(port) for port in ports)


def test_closing_the_manager_ends_a_connection_still_open(
    bulk_config: Path, tmp_path: Path
) -> None:
    before = set(threading.enumerate())
    with Tunnels(bulk_config, tmp_path) as tunnels:
        tunnel = tunnels.open("server-02", "echo")
        with connect(tunnel.local_port, timeout=3) as idle:
            idle.sendall(b"still here\n")
            assert read_line(idle) == b"still here\n"
            tunnels.manager.close_all()
            assert tunnel.state is TunnelState.CLOSED
            threads_gone = wait_for(lambda: not manager_threads(before), 3)
            assert threads_gone, manager_threads(before)
            assert idle.recv(1) == b""  # the client is told, not left hanging
    # Once the client itself hangs up, everything goes (this much works today).
    assert wait_for(lambda: not manager_threads(before), 5), manager_threads(before)


def test_a_taken_fixed_port_fails_before_any_login(ssh_world: World, tunnels: Tunnels) -> None:
    taken = occupy(free_port())
    try:
        port = taken.getsockname()[1]
        since = len(ssh_world.bastion.events)
        with pytest.raises(PortInUseError) as error:
            tunnels.open("server-02", "echo", local_port=port)
        assert str(port) in error.value.message
        assert ssh_world.bastion.events[since:] == []  # nothing was tried on the bastion
        assert tunnels.manager.bastion_logins(BASTION) == 0
        assert tunnels.manager.list() == []
        assert TunnelState.UP not in states(tunnels.events)
    finally:
        taken.close()


def test_a_taken_default_port_moves_to_the_next_free_one(tunnels: Tunnels) -> None:
    default = tunnels.spec("server-02", "echo").local_port
    taken = occupy(default)
    try:
        tunnel = tunnels.open("server-02", "echo")
        assert tunnel.local_port != default
        assert default < tunnel.local_port <= default + 20
        moved = [
            e.message
            for e in tunnels.events
            if e.state is TunnelState.CONNECTING and "in use" in e.message
        ]
        assert moved == [f"local port {default} is in use; using {tunnel.local_port} instead"]
        carries_data(tunnel)
    finally:
        taken.close()
