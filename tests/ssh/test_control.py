"""The control socket layer in-process: a ControlServer serving a real TunnelManager's tunnel."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastionctl.config import load_config
from bastionctl.errors import ProtocolError, UsageError
from bastionctl.system import channel
from bastionctl.tunnels import client, control, protocol
from bastionctl.tunnels.manager import ManagedTunnel, TunnelManager
from bastionctl.tunnels.protocol import (
    AnswerTunnel,
    Failed,
    Listed,
    ListTunnels,
    Notice,
    OpenTunnel,
    Stopped,
    StopTunnels,
    TunnelId,
    TunnelRequest,
    TunnelState,
)
from bastionctl.tunnels.service import TunnelService
from bastionctl.tunnels.spec import build_spec
from tests.lab.helpers import listening
from tests.ssh.helpers import echo_roundtrip, make_session, refusing_ask, wait_for
from tests.ssh.services import refused_port
from tests.ssh.world import World


@dataclass
class Served:
    manager: TunnelManager
    tunnel: ManagedTunnel
    server: control.ControlServer
    prompts: list[str]


@pytest.fixture
def served(ssh_world: World, bulk_config: Path, tmp_path: Path) -> Iterator[Served]:
    """One echo tunnel to server-02 in a foreground-process manager, served on its socket."""
    config = load_config(bulk_config)
    prompts: list[str] = []
    session = make_session(config, tmp_path, ask=refusing_ask(prompts))
    manager = TunnelManager(process="foreground")
    server = control.ControlServer(
        control.process_socket(manager.pid), TunnelService(manager).handle
    )
    try:
        tunnel = manager.open(build_spec(config, TunnelRequest("server-02", "echo")), session)
        server.start()
        yield Served(manager, tunnel, server, prompts)
    finally:
        server.close()
        manager.close_all()


def talk_raw(path: Path, line: bytes) -> tuple[protocol.Message | None, bytes]:
    """Send `line` as is; the one decoded reply and whatever followed it before EOF."""
    with channel.connect(path, timeout=10) as sock:  # past the peer check, whatever it is
        sock.sendall(line)
        sock.shutdown(socket.SHUT_WR)  # a well-formed conversation ends when we hang up
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    first, _newline, rest = data.partition(b"\n")
    return (protocol.decode(first) if first else None), rest


def test_all_tunnels_lists_the_tunnel_with_its_fields(served: Served, ssh_world: World) -> None:
    tunnel = served.tunnel
    port = tunnel.local_port
    payload = b"x" * 1000
    echo_roundtrip(port, payload)
    # The forwarder counts bytes and connections in its own threads, a moment after the echo.
    assert wait_for(lambda: tunnel.forwarder.active == 0, 5)
    assert wait_for(lambda: tunnel.forwarder.bytes_in >= len(payload), 5)
    [info] = client.all_tunnels()
    assert info.id == TunnelId(os.getpid(), 1) == tunnel.id
    assert info.process == "foreground"
    assert (info.service, info.host, info.bastion) == ("echo", "server-02", "server-01")
    assert (info.remote_host, info.remote_port) == ("localhost", ssh_world.service_port("echo"))
    assert (info.bind, info.local_port) == ("127.0.0.1", port)
    assert info.connection == f"127.0.0.1:{port}"
    assert info.state is TunnelState.UP
    assert (info.bytes_in, info.bytes_out) == (len(payload), len(payload))
    assert info.connections == 0
    assert info.errors == 0 and info.last_error is None and info.waiting_for is None
    assert info == tunnel.info()
    assert served.prompts == []


def test_one_connection_carries_several_requests(served: Served) -> None:
    conn = control.connect(served.server.path)
    try:
        for _ in range(3):
            conn.send(ListTunnels())
            reply = conn.receive()
            assert isinstance(reply, Listed)
            assert (reply.pid, reply.process) == (os.getpid(), "foreground")
            assert [t.id for t in reply.tunnels] == [served.tunnel.id]
    finally:
        conn.close()


def test_stop_tunnels_stops_it_and_frees_the_port(served: Served) -> None:
    port = served.tunnel.local_port
    assert listening(port)
    assert client.stop_tunnels(served.tunnel.id) == [served.tunnel.id]
    assert not listening(port)
    assert served.tunnel.state is TunnelState.CLOSED
    assert served.manager.list() == []
    assert client.all_tunnels() == []


def test_stop_tunnels_none_stops_every_tunnel(served: Served) -> None:
    port = served.tunnel.local_port
    assert client.stop_tunnels(None) == [served.tunnel.id]
    assert not listening(port)
    assert client.stop_tunnels(None) == []


def test_stopping_an_unknown_id_is_a_usage_error_naming_it(served: Served) -> None:
    unknown = TunnelId(os.getpid(), 99)
    with pytest.raises(UsageError, match=rf"no tunnel with id {os.getpid()}\.99"):
        client.stop_tunnels(unknown)
    with pytest.raises(UsageError, match=r"no tunnel with id 999\.9"):
        client.stop_tunnels(TunnelId(999, 9))
    # Asked directly, the serving process says the same over the socket.
    reply = control.request(served.server.path, StopTunnels(unknown))
    assert isinstance(reply, Failed) and reply.kind == "UsageError"
    assert f"no tunnel with id {unknown}" in reply.message
    assert listening(served.tunnel.local_port)
    assert [t.id for t in client.all_tunnels()] == [served.tunnel.id]


def plant_dead_endpoint(name: str) -> Path:
    """What a killed process leaves: its endpoint published, nothing listening behind it."""
    dead = channel.endpoint(control.sockets_dir(), name)
    if dead.suffix == channel.UNIX_SUFFIX:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(str(dead))
            sock.listen(1)
    else:
        dead.write_text(f"{refused_port()}\n")
    assert dead.exists()
    return dead


def test_a_dead_process_socket_is_removed_and_skipped(served: Served) -> None:
    dead = plant_dead_endpoint("4000000")
    assert list(control.live_sockets()) == [served.server.path]
    assert not dead.exists()
    dead = plant_dead_endpoint("4000000")
    assert [t.id for t in client.all_tunnels()] == [served.tunnel.id]
    assert not dead.exists()


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (b"hello\n", "is not JSON"),
        (b"[1, 2]\n", "is not a JSON object"),
        (b'{"v": 2, "type": "list"}\n', "protocol version 2; this one speaks 1"),
        (b'{"type": "list"}\n', "no protocol version"),
        (b'{"v": 1, "type": "explode"}\n', "unknown bastionctl control message type"),
        (b'{"v": 1, "type": "stop", "tunnel": "x"}\n', "stop.tunnel has the wrong type"),
    ],
)
def test_a_bad_message_gets_one_protocol_error_reply(
    served: Served, line: bytes, needle: str
) -> None:
    reply, rest = talk_raw(served.server.path, line + b'{"v": 1, "type": "list"}\n')
    assert isinstance(reply, Failed)
    assert reply.kind == "ProtocolError" and needle in reply.message
    assert isinstance(reply.error(), ProtocolError)
    assert rest == b""  # one reply, then the server hangs up: the list after it is not answered
    assert listening(served.tunnel.local_port)


def test_a_message_that_is_no_request_gets_a_failed_reply(served: Served) -> None:
    reply, rest = talk_raw(served.server.path, protocol.encode(Notice("hello")))
    assert isinstance(reply, Failed) and reply.kind == "ProtocolError"
    assert "'notice' is no request" in reply.message
    assert rest == b""
    stopped = Stopped((served.tunnel.id,))
    reply, _ = talk_raw(served.server.path, protocol.encode(stopped))
    assert isinstance(reply, Failed) and "'stopped' is no request" in reply.message
    assert [t.id for t in client.all_tunnels()] == [served.tunnel.id]


def test_a_peer_that_hangs_up_at_once_does_no_harm(served: Served) -> None:
    for _ in range(3):
        if channel.unix_sockets():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(str(served.server.path))
        else:
            port = int(served.server.path.read_text())
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    reply, _ = talk_raw(served.server.path, protocol.encode(ListTunnels()))
    assert isinstance(reply, Listed) and len(reply.tunnels) == 1


def test_the_socket_is_private(served: Served) -> None:
    path = served.server.path
    assert path == channel.endpoint(control.sockets_dir(), str(os.getpid()))
    mode = path.stat().st_mode
    kind = stat.S_ISSOCK(mode) if channel.unix_sockets() else stat.S_ISREG(mode)
    assert kind and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.stat().st_uid == os.getuid()


def test_close_removes_the_socket_file(served: Served) -> None:
    path = served.server.path
    assert path.exists()
    served.server.close()
    assert not path.exists()
    assert list(control.live_sockets()) == []
    assert client.all_tunnels() == []
    # The tunnel itself belongs to the manager, not to the socket.
    assert listening(served.tunnel.local_port)


def test_a_foreground_process_opens_no_tunnels_for_others(served: Served) -> None:
    reply = control.request(served.server.path, OpenTunnel(TunnelRequest("server-02", "echo")))
    assert isinstance(reply, Failed) and reply.kind == "UsageError"
    assert "(foreground) opens no tunnels for others" in reply.message
    with pytest.raises(UsageError, match="opens no tunnels for others"):
        protocol.expect(reply, protocol.Opened, "the foreground process")
    reply = control.request(served.server.path, AnswerTunnel(served.tunnel.id))
    assert isinstance(reply, Failed) and "opens no tunnels for others" in reply.message
    assert len(served.manager.list()) == 1
    assert served.prompts == []


def test_tunnel_list_json_of_another_process_sees_it(served: Served) -> None:
    """`bastionctl tunnel list --json`, a real process, reaches this process's socket."""
    from tests.lab.helpers import run_cli

    result = run_cli("tunnel", "list", "--json", timeout=30)
    assert result.returncode == 0, result.stderr
    [entry] = json.loads(result.stdout)["tunnels"]
    assert entry["id"] == str(served.tunnel.id) and entry["pid"] == os.getpid()
    assert entry["process"] == "foreground" and entry["state"] == "up"
    assert entry["local_port"] == served.tunnel.local_port


@pytest.mark.parametrize(
    "line",
    [b"[" * 100_000 + b"\n", b'{"v": 1, "type": "answer-tunnel", "tunnel": "\\u00b2.1"}\n'],
    ids=["deep-json", "superscript-id"],
)
def test_a_message_decode_chokes_on_still_gets_a_failed_reply(served: Served, line: bytes) -> None:
    reply, _rest = talk_raw(served.server.path, line)
    assert isinstance(reply, Failed) and reply.kind == "ProtocolError"
