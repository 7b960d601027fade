"""The forwarding data path, fast and plain, through the in-process bastion and targets.

Every byte goes client socket -> LocalForwarder -> direct-tcpip in the target's transport,
carried in a direct-tcpip channel of the bastion's transport -> the test servers -> a
service, and back; the data is checked by sha256 at the far end.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest
from paramiko.common import DEFAULT_MAX_PACKET_SIZE, MSG_CHANNEL_OPEN

from bastionctl.lab.standin import pattern
from bastionctl.ssh import datapath, forward, seam, workers
from bastionctl.ssh.datapath import WINDOW_SIZE, DataPath
from bastionctl.ssh.wire import JumpSocket
from bastionctl.tunnels.protocol import TunnelState
from tests.ssh.helpers import (
    Background,
    MiB,
    Tunnels,
    connect,
    download,
    echo_roundtrip,
    read_exactly,
    read_line,
    read_to_eof,
    refused_at_once,
    sha256,
    upload,
    use_data_path,
    wait_for,
)
from tests.ssh.services import GREETING
from tests.ssh.world import World

# "fast-queued": the fast path with every write of a target's transport going through its
# jump socket's writer thread, as when many senders wait at once (ssh.wire.JumpSocket).
PATHS = {"fast": datapath.FAST, "fast-queued": datapath.FAST, "plain": datapath.PLAIN}
FAST_ONLY = pytest.mark.parametrize("path", ["fast", "fast-queued"], indirect=True)


@functools.cache
def pattern_digest(size: int) -> str:
    return sha256(pattern(size))


@pytest.fixture(params=sorted(PATHS))
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> DataPath:
    """The data path under test, chosen before any manager is made."""
    if request.param == "fast-queued":
        monkeypatch.setattr(seam, "watch_senders", lambda _transport: lambda: True)
    return use_data_path(monkeypatch, PATHS[request.param])


def queued_writes_seen(request: pytest.FixtureRequest, tunnels: Tunnels) -> None:
    """Under "fast-queued", the tunnels' target transports did write through their queue."""
    if request.node.callspec.params["path"] != "fast-queued":
        return
    sockets = [
        link.transport.sock
        for tunnel in tunnels.opened
        for link in tunnel._links()[1:]
        if link.transport is not None
    ]
    assert sockets and all(isinstance(sock, JumpSocket) for sock in sockets), sockets
    assert all(sock._writer is not None for sock in sockets)


@pytest.fixture
def tunnels(
    request: pytest.FixtureRequest, path: DataPath, bulk_config: Path, tmp_path: Path
) -> Iterator[Tunnels]:
    with Tunnels(bulk_config, tmp_path) as tunnels:
        assert tunnels.manager.data_path is path
        yield tunnels
        queued_writes_seen(request, tunnels)


@pytest.fixture
def quiet_tunnels(
    request: pytest.FixtureRequest, path: DataPath, bulk_config: Path, tmp_path: Path
) -> Iterator[Tunnels]:
    """Tunnels that send no keepalive probe during the test (60 s instead of the world's 1 s).

    For the re-key test, whose servers answer probes when they should not; the probes
    themselves are tested in test_manager.py.
    """
    with Tunnels(bulk_config, tmp_path, keepalive_interval=60) as tunnels:
        assert tunnels.manager.data_path is path
        yield tunnels
        queued_writes_seen(request, tunnels)


# --- bulk data ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [MiB, 16 * MiB], ids=["1MiB", "16MiB"])
def test_echo_intact(tunnels: Tunnels, size: int) -> None:
    tunnel = tunnels.open("server-02", "echo")
    echo_roundtrip(tunnel.local_port, os.urandom(size))
    assert wait_for(lambda: (tunnel.info().bytes_out, tunnel.info().bytes_in) == (size, size), 2)
    assert tunnel.info().errors == 0


def test_64_mib_from_source(tunnels: Tunnels) -> None:
    size = 64 * MiB
    tunnel = tunnels.open("server-02", "source")
    assert download(tunnel.local_port, size) == (size, pattern_digest(size))
    assert wait_for(lambda: tunnel.forwarder.bytes_in == size, 2), tunnel.forwarder.bytes_in


def test_64_mib_into_sink(tunnels: Tunnels) -> None:
    size = 64 * MiB
    tunnel = tunnels.open("server-02", "sink")
    assert upload(tunnel.local_port, pattern(size)) == pattern_digest(size)
    assert tunnel.forwarder.bytes_out == size


# --- EOF ------------------------------------------------------------------------------------


def test_client_half_close_still_gets_the_answer_then_eof(tunnels: Tunnels) -> None:
    tunnel = tunnels.open("server-02", "sink")
    data = b"half-closed, still listening\n" * 1000
    with connect(tunnel.local_port) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        # The sink answers only once our EOF reached it through both hops.
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer == f"{sha256(data)}\n".encode()  # then EOF: the loop ended


def test_service_closes_first_and_the_client_sees_eof_after_exactly_n_bytes(
    tunnels: Tunnels,
) -> None:
    tunnel = tunnels.open("server-02", "source")
    for size in (1, MiB + 17):
        with connect(tunnel.local_port) as sock:
            sock.sendall(f"{size}\n".encode())
            # Our side stays open: the EOF is the service's, carried back to us.
            assert read_to_eof(sock) == (size, pattern_digest(size))
            sock.sendall(b"after the service's EOF\n")  # our write side still works
    assert tunnel.state is TunnelState.UP
    assert wait_for(lambda: tunnel.forwarder.active == 0, 5)


# --- flow control ------------------------------------------------------------------------------


def test_a_client_that_stops_reading_holds_the_server_back(
    path: DataPath, tunnels: Tunnels
) -> None:
    size = 48 * MiB
    tunnel = tunnels.open("server-02", "source")
    forwarder = tunnel.forwarder
    with connect(tunnel.local_port, rcvbuf=64 * 1024) as sock:
        sock.sendall(f"{size}\n".encode())

        def settled() -> bool:
            # The client's socket is full: nothing more is accepted for it for a while.
            seen = []
            for _ in range(3):
                seen.append(forwarder.bytes_in)
                time.sleep(0.2)
            return seen[0] > 0 and seen.count(seen[0]) == 3 and forwarder.bytes_in == seen[0]

        assert wait_for(settled, 10, interval=0), forwarder.bytes_in
        samples: list[tuple[int, int]] = []
        stop_at = time.monotonic() + 1.0
        while time.monotonic() < stop_at:
            samples.append((forwarder.buffered(), forwarder.bytes_in))
            time.sleep(0.05)
        delivered = {bytes_in for _buffered, bytes_in in samples}
        assert len(delivered) == 1, "bytes reached a client that reads nothing"
        assert delivered.pop() < size
        if path.fast:
            # Only the fast path holds data in bastionctl: never more than one window.
            assert max(buffered for buffered, _bytes_in in samples) <= WINDOW_SIZE, samples
        else:
            assert forwarder.buffered() == 0  # the plain path leaves it to paramiko
        assert read_to_eof(sock) == (size, pattern_digest(size))
    assert wait_for(lambda: forwarder.bytes_in == size, 2), forwarder.bytes_in
    assert forwarder.buffered() == 0


def test_key_re_exchange_by_both_servers_mid_transfer(
    ssh_world: World, quiet_tunnels: Tunnels
) -> None:
    # Quiet: paramiko's server mode answers a global request (our keepalive probe) with
    # _send_message() even in the middle of a key exchange it started, where OpenSSH holds
    # the answer back; our transport then dies on "Expecting packet from (31,), got 82".
    # That is the test server's fault, not bastionctl's.
    size = 64 * MiB
    tunnel = quiet_tunnels.open("server-02", "source")
    transports = [link.transport for link in tunnel._links()]
    servers = (ssh_world.bastion, ssh_world.targets["server-02"])
    # rekey() reaches every live transport of a server: let those of earlier tests finish
    # going away first, so only this tunnel's are re-keyed (a dying one would raise).
    assert wait_for(lambda: all(len(s.active_transports()) == 1 for s in servers), 5), [
        len(s.active_transports()) for s in servers
    ]
    done = threading.Event()
    rekeys = {"server-01": 0, "server-02": 0}

    def rekey() -> None:
        while not done.is_set():
            rekeys["server-01"] += ssh_world.bastion.rekey()
            rekeys["server-02"] += ssh_world.targets["server-02"].rekey()
            done.wait(0.05)

    with connect(tunnel.local_port) as sock:
        sock.sendall(f"{size}\n".encode())
        first = read_exactly(sock, MiB)  # the transfer is under way before the rekeys
        assert first[0] == MiB
        rekeying = Background(rekey, "test-rekey")
        try:
            rest = read_to_eof(sock)
            during = dict(rekeys)
        finally:
            done.set()
            rekeying.join(30)
    expected = pattern(size)
    assert rest == (size - MiB, sha256(expected[MiB:]))
    assert first[1] == sha256(expected[:MiB])
    assert wait_for(lambda: tunnel.forwarder.bytes_in == size, 2), tunnel.forwarder.bytes_in
    assert during["server-01"] >= 2 and during["server-02"] >= 2, during
    assert all(t is not None and t.is_active() for t in transports)
    assert [link.transport for link in tunnel._links()] == transports  # not rebuilt
    assert tunnel.state is TunnelState.UP
    assert quiet_tunnels.manager.bastion_logins("server-01") == 1


# --- refusals ----------------------------------------------------------------------------------


def test_a_refused_forward_is_counted_and_the_tunnel_stays_up(
    ssh_world: World, tunnels: Tunnels
) -> None:
    tunnel = tunnels.open("server-02", "refused")
    port = ssh_world.service_port("refused")
    expected = f"nothing listens on localhost:{port} on server-02 (connect failed)"
    started = time.time()
    assert refused_at_once(tunnel.local_port)
    assert wait_for(lambda: tunnel.info().errors == 1, 5)
    info = tunnel.info()
    assert info.last_error == expected
    assert info.last_error_at is not None and info.last_error_at >= started - 1
    assert refused_at_once(tunnel.local_port)
    assert wait_for(lambda: tunnel.info().errors == 2, 5)
    info = tunnel.info()
    assert info.last_error == expected
    assert info.state is TunnelState.UP and tunnel.state is TunnelState.UP
    assert info.connections == 0


@FAST_ONLY
def test_an_open_the_server_never_answers_is_given_up_after_the_timeout(
    ssh_world: World, tunnels: Tunnels
) -> None:
    # While the tunnel is up, the accept thread sends the open and no thread waits for the
    # answer (ssh.forward, _open_started); a watchdog gives up on it after connect_timeout.
    tunnel = tunnels.open("server-02", "echo")
    echo_roundtrip(tunnel.local_port, b"up")
    assert tunnel.forwarder._watchdog is not None  # that connection took the quick path
    target = ssh_world.targets["server-02"]
    with target._lock:
        transports = list(target._transports)
    saved = [(t, t._handler_table[MSG_CHANNEL_OPEN]) for t in transports]  # type: ignore[attr-defined]
    for transport in transports:
        transport._handler_table[MSG_CHANNEL_OPEN] = lambda _message: None  # type: ignore[attr-defined]
    try:
        started = time.monotonic()
        with connect(tunnel.local_port, timeout=15) as sock:
            assert sock.recv(1) == b""  # closed, not left hanging
        waited = time.monotonic() - started
    finally:
        for transport, handler in saved:
            transport._handler_table[MSG_CHANNEL_OPEN] = handler  # type: ignore[attr-defined]
    assert 4.5 <= waited < 9, waited  # connect_timeout = 5 in the world's config
    assert wait_for(lambda: tunnel.info().errors == 1, 5)
    assert tunnel.info().last_error == (
        f"server-02 did not open a channel to localhost:{ssh_world.service_port('echo')} within 5 s"
    )
    echo_roundtrip(tunnel.local_port, b"still up")
    assert tunnel.info().state is TunnelState.UP


@pytest.fixture
def early_sends(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """What each seam.send_now() call returned (the forwarder's first bytes, ssh.forward)."""
    results: list[int | None] = []
    real = seam.send_now

    def recorded(channel: paramiko.Channel, take: Callable[[int], bytes]) -> int | None:
        result = real(channel, take)
        results.append(result)
        return result

    monkeypatch.setattr(seam, "send_now", recorded)
    return results


@FAST_ONLY
def test_a_client_that_speaks_first_has_its_first_packet_sent_with_the_open_answer(
    ssh_world: World, tunnels: Tunnels, early_sends: list[int | None]
) -> None:
    # The open's answer waits until the client has sent everything: the transport's thread
    # then sends one packet's worth itself, and the worker the rest, in order.
    tunnel = tunnels.open("server-02", "echo")
    echo_roundtrip(tunnel.local_port, b"up")
    early_sends.clear()
    sent = threading.Event()
    target = ssh_world.targets["server-02"]
    with target._lock:
        transports = list(target._transports)
    saved = [(t, t._handler_table[MSG_CHANNEL_OPEN]) for t in transports]  # type: ignore[attr-defined]
    for transport, handler in saved:

        def held(message: paramiko.Message, handler: Callable[..., None] = handler) -> None:
            sent.wait(10)
            handler(message)

        transport._handler_table[MSG_CHANNEL_OPEN] = held  # type: ignore[attr-defined]
    data = os.urandom(100 * 1024)
    try:
        with connect(tunnel.local_port) as sock:
            sock.sendall(data)
            sent.set()
            count, digest = read_exactly(sock, len(data))
    finally:
        for transport, handler in saved:
            transport._handler_table[MSG_CHANNEL_OPEN] = handler  # type: ignore[attr-defined]
    assert (count, digest) == (len(data), sha256(data))
    assert early_sends == [DEFAULT_MAX_PACKET_SIZE - 64]  # as much as the server takes at once
    assert wait_for(lambda: tunnel.info().bytes_out == 2 + len(data), 5)


@FAST_ONLY
def test_a_service_that_speaks_first_gets_nothing_early(
    tunnels: Tunnels, early_sends: list[int | None]
) -> None:
    tunnel = tunnels.open("server-02", "greeter")
    with connect(tunnel.local_port) as sock:
        assert read_line(sock) == GREETING
        sock.sendall(b"hello\n")
        assert read_line(sock) == b"hello\n"
    assert early_sends == [0]


@FAST_ONLY
def test_an_error_sending_early_stays_out_of_paramikos_handler(
    tunnels: Tunnels, monkeypatch: pytest.MonkeyPatch
) -> None:
    # send_now() runs inside paramiko's handling of the open's answer: what it raises must not
    # reach paramiko, which would end the transport for it.
    def failing(_channel: paramiko.Channel, _take: Callable[[int], bytes]) -> int | None:
        raise OSError("the jump channel failed")

    tunnel = tunnels.open("server-02", "echo")
    echo_roundtrip(tunnel.local_port, b"up")
    monkeypatch.setattr(seam, "send_now", failing)
    echo_roundtrip(tunnel.local_port, b"sent by the worker")
    assert tunnel.info().state is TunnelState.UP and tunnel.info().errors == 0


@FAST_ONLY
def test_the_jump_socket_closes_quietly_when_the_bastion_link_just_failed(
    tunnels: Tunnels,
) -> None:
    # The target's transport closes its jump socket as its thread ends, often because the
    # bastion's transport is failing: its packetizer is closed before its channels are.
    tunnel = tunnels.open("server-02", "echo")
    echo_roundtrip(tunnel.local_port, b"up")
    bastion, target = (link.transport for link in tunnel._links())
    assert bastion is not None and target is not None
    jump = target.sock
    assert isinstance(jump, JumpSocket)
    bastion.packetizer.close()  # what a failing link does first: the next write raises
    jump.close()  # no EOFError from closing the bastion's channel


@FAST_ONLY
def test_send_now_takes_nothing_when_sending_could_wait(ssh_world: World, tunnels: Tunnels) -> None:
    tunnel = tunnels.open("server-02", "echo")
    echo_roundtrip(tunnel.local_port, b"up")
    transport = tunnel._links()[1].transport
    assert transport is not None
    echo = ("localhost", ssh_world.service_port("echo"))
    channel = datapath.FAST.open_channel(transport, echo, ("127.0.0.1", 1), 5)
    asked: list[int] = []

    def take(limit: int) -> bytes:
        asked.append(limit)
        return b"abc"

    try:
        with transport.clear_to_send_lock:  # another sender, or a key exchange, holds it
            assert seam.send_now(channel, take) is None
        transport.clear_to_send.clear()  # a key exchange under way: only its end sets it
        try:
            assert seam.send_now(channel, take) is None
        finally:
            transport.clear_to_send.set()
        with channel.lock:  # a sender of this channel holds it
            assert seam.send_now(channel, take) is None
        window = channel.out_window_size
        channel.out_window_size = 0
        assert seam.send_now(channel, take) is None
        channel.out_window_size = window
        assert asked == []
        assert seam.send_now(channel, take) == 3
        assert asked == [min(window, channel.out_max_packet_size - 64)]
        assert channel.out_window_size == window - 3
        assert seam.send_now(channel, lambda _limit: b"") == 0
        channel.settimeout(5)
        assert channel.recv(3) == b"abc"
    finally:
        channel.close()
    assert seam.send_now(channel, take) is None
    assert len(asked) == 1


# --- many clients ------------------------------------------------------------------------------


def test_many_short_connections_leave_no_thread_or_fd_behind(tunnels: Tunnels) -> None:
    # Connections run on pooled workers (ssh.workers): one after another they reuse the
    # same few, 20 at a time they need no more than that, and every fd goes when they close.
    tunnel = tunnels.open("server-02", "echo")
    echo_roundtrip(tunnel.local_port, b"warm-up")
    assert wait_for(lambda: tunnel.forwarder.active == 0, 5)
    fds = len(os.listdir("/proc/self/fd"))
    pool = workers.shared()
    started = pool.started
    for _ in range(200):
        echo_roundtrip(tunnel.local_port, os.urandom(1024))
    assert pool.started - started <= 4, pool.started - started  # plain path: a task each way
    clients = [
        Background(
            lambda: [echo_roundtrip(tunnel.local_port, os.urandom(1024)) for _ in range(20)],
            f"test-client-{n}",
        )
        for n in range(20)
    ]
    for client in clients:
        client.join(60)
    assert pool.started - started <= 2 * 20 + 4, pool.started - started
    assert wait_for(lambda: tunnel.forwarder.active == 0, 5)
    assert wait_for(lambda: len(os.listdir("/proc/self/fd")) <= fds, 5), (
        len(os.listdir("/proc/self/fd")),
        fds,
    )
    assert tunnel.info().errors == 0
    assert tunnel.info().bytes_out == 7 + 600 * 1024


def test_a_channel_the_server_leaves_open_after_both_eofs_is_closed_later(
    tunnels: Tunnels, ssh_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A finished connection leaves its channel to the server, which closes it once both sides
    # sent EOF (OpenSSH does; paramiko answers), so no thread waits for that. One the server
    # leaves open is closed by the next connection's worker once CLOSE_GRACE has passed.
    target = ssh_world.targets["server-02"]
    monkeypatch.setattr(forward, "CLOSE_GRACE", 0.3)
    monkeypatch.setattr(target, "close_after_eofs", False)
    monkeypatch.setattr(target, "kept", [])
    tunnel = tunnels.open("server-02", "echo")
    echo_roundtrip(tunnel.local_port, b"left open")
    assert wait_for(lambda: tunnel.forwarder.active == 0 and len(target.kept) == 1, 5)
    time.sleep(0.5)
    assert not target.kept[0].closed
    target.close_after_eofs = True
    echo_roundtrip(tunnel.local_port, b"next")
    assert wait_for(lambda: target.kept[0].closed, 5)
    assert tunnel.info().errors == 0


@FAST_ONLY
def test_fifty_concurrent_clients_through_one_tunnel(tunnels: Tunnels) -> None:
    # With the world's 1 s keepalive: 50 windows of data in flight hold a probe's answer back,
    # and the data arriving meanwhile must count as a sign of life.
    tunnel = tunnels.open("server-02", "echo")
    clients = [
        Background(lambda: echo_roundtrip(tunnel.local_port, os.urandom(MiB)), f"test-client-{n}")
        for n in range(50)
    ]
    for client in clients:
        client.join(60)
    total = 50 * MiB
    assert wait_for(lambda: (tunnel.info().bytes_out, tunnel.info().bytes_in) == (total, total), 2)
    assert tunnel.info().errors == 0
    assert wait_for(lambda: tunnel.forwarder.active == 0, 5)
