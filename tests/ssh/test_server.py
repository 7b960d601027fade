"""The test SSH server itself, driven by a plain paramiko client and by OpenSSH."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pyotp
import pytest
from paramiko.common import (
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_FAILED_CONNECT_FAILED,
)

from bastionctl.config import load_config
from bastionctl.lab.standin import pattern
from bastionctl.otp import SecretStore, parse_secret
from tests.ssh.faults import FaultProxy
from tests.ssh.helpers import MiB, read_line, send_chunks, wait_for
from tests.ssh.server import KBD, PUBLICKEY, SshServer, UserRule, new_ed25519
from tests.ssh.services import GREETING, Service, start_services
from tests.ssh.world import (
    BASTION,
    SERVICE_KINDS,
    Answerer,
    FaultBastion,
    World,
    answers,
    client_transport,
    tcp,
)


def away_from_step_edge() -> None:
    """Sleep past the next TOTP step boundary when it is less than a second away."""
    left = 30 - time.time() % 30
    if left < 1.0:
        time.sleep(left + 0.05)


def recorded(answer: Answerer, calls: list[list[tuple[str, bool]]]) -> Answerer:
    """`answer`, noting the prompts of each call in `calls`."""

    def handler(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
        calls.append(list(prompts))
        return answer(title, instructions, prompts)

    return handler


def wrong_code(secret: str) -> str:
    totp = pyotp.TOTP(secret)
    valid = {totp.at(time.time() + d) for d in range(-90, 91, 30)}
    return next(c for c in (f"{n:06d}" for n in range(1000)) if c not in valid)


def sink_digest(channel: paramiko.Channel, data: bytes, during: Callable[[], None]) -> str:
    """Send `data` to a sink in a thread, call `during()` meanwhile, return the sink's answer."""
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            send_chunks(channel, data)
            channel.shutdown_write()
        except BaseException as exc:
            errors.append(exc)

    sender = threading.Thread(target=upload, name="test-upload")
    sender.start()
    during()
    answer = read_line(channel)
    sender.join(30)
    assert not errors, errors
    return answer.decode().strip()


def server_threads(server: SshServer) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(server.thread_prefix)]


@pytest.fixture
def bastion(ssh_world: World) -> Iterator[paramiko.Transport]:
    transport = ssh_world.login_bastion("bulk")
    yield transport
    transport.close()


@pytest.fixture
def target(ssh_world: World, bastion: paramiko.Transport) -> Iterator[paramiko.Transport]:
    transport = ssh_world.login_target(bastion, "server-02")
    yield transport
    transport.close()


# --- logging in ----------------------------------------------------------------------------


def test_publickey_then_totp_as_openssh_with_authentication_methods(ssh_world: World) -> None:
    server = ssh_world.bastion
    before = len(server.events)
    transport = client_transport(tcp(server.port), server.host_key)
    try:
        with pytest.raises(paramiko.BadAuthenticationType) as none:
            transport.auth_none("bulk")
        assert none.value.allowed_types == [PUBLICKEY]
        assert transport.auth_publickey("bulk", ssh_world.client_keys[BASTION]) == [KBD]
        assert not transport.is_authenticated()
        calls: list[list[tuple[str, bool]]] = []
        handler = recorded(answers(ssh_world.totp_code("bulk")), calls)
        assert transport.auth_interactive("bulk", handler) == []
        assert transport.is_authenticated()
        assert calls == [[("Verification code: ", False)]]
    finally:
        transport.close()
    new = server.events[before:]
    assert [(e.user, e.method, e.outcome) for e in new] == [
        ("bulk", PUBLICKEY, "partial"),
        ("bulk", KBD, "accepted"),
    ]


def test_wrong_code_wrong_key_unknown_user_and_wrong_order_fail(ssh_world: World) -> None:
    server = ssh_world.bastion
    key = ssh_world.client_keys[BASTION]
    transport = client_transport(tcp(server.port), server.host_key)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_interactive("bulk", answers(ssh_world.totp_code("bulk")))
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_publickey("bulk", new_ed25519()[0])
        assert transport.auth_publickey("bulk", key) == [KBD]
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_interactive("bulk", answers(wrong_code(ssh_world.secret("bulk"))))
        assert not transport.is_authenticated()
    finally:
        transport.close()
    stranger = client_transport(tcp(server.port), server.host_key)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            stranger.auth_publickey("mallory", key)
    finally:
        stranger.close()
    assert server.events[-5:][0].outcome == "failed"
    assert [e.outcome for e in server.events[-5:]] == [
        "failed",
        "failed",
        "partial",
        "failed",
        "failed",
    ]


def test_reuse_ban_and_rate_limit_as_google_authenticator() -> None:
    key, _text = new_ed25519()
    secret = pyotp.random_base32()
    with SshServer("ga", {"op": UserRule([key], totp_secret=secret)}) as server:

        def login(code: str, calls: list[list[tuple[str, bool]]]) -> bool:
            transport = client_transport(tcp(server.port), server.host_key)
            try:
                transport.auth_publickey("op", key)
                transport.auth_interactive("op", recorded(answers(code), calls))
                return transport.is_authenticated()
            except paramiko.AuthenticationException:
                return False
            finally:
                transport.close()

        away_from_step_edge()
        code = pyotp.TOTP(secret).now()
        calls: list[list[tuple[str, bool]]] = []
        assert login(code, calls)
        assert not login(code, calls)  # the same code (step) again
        assert not login(wrong_code(secret), calls)
        assert len(calls) == 3
        # The 4th attempt within 30 s: refused before any prompt.
        assert not login(pyotp.TOTP(secret).now(), calls)
        assert len(calls) == 3
        assert server.outcomes("op") == [
            *("partial", "accepted"),
            *("partial", "reused"),
            *("partial", "failed"),
            *("partial", "rate-limited"),
        ]
        assert server.logins() == 1
        assert server.attempts() == 4
        assert server.logins(PUBLICKEY) == 4


def test_window_accepts_the_previous_step_only() -> None:
    key, _text = new_ed25519()
    secret = pyotp.random_base32()
    rule = UserRule([key], totp_secret=secret, disallow_reuse=False, rate_limit=None)
    with SshServer("window", {"u": rule}) as server:

        def accepted(code: str) -> bool:
            transport = client_transport(tcp(server.port), server.host_key)
            try:
                transport.auth_publickey("u", key)
                transport.auth_interactive("u", answers(code))
                return transport.is_authenticated()
            except paramiko.AuthenticationException:
                return False
            finally:
                transport.close()

        totp = pyotp.TOTP(secret)
        away_from_step_edge()
        assert accepted(totp.at(time.time() - 30))
        assert accepted(totp.at(time.time() + 30))
        assert not accepted(totp.at(time.time() - 60))
        assert not accepted(totp.at(time.time() + 60))


def test_keyboard_interactive_first_when_configured() -> None:
    key, _text = new_ed25519()
    secret = pyotp.random_base32()
    rule = UserRule([key], totp_secret=secret, kbd_first=True, rate_limit=None)
    with SshServer("kbd-first", {"u": rule}) as server:
        transport = client_transport(tcp(server.port), server.host_key)
        try:
            with pytest.raises(paramiko.BadAuthenticationType) as none:
                transport.auth_none("u")
            assert none.value.allowed_types == [KBD]
            with pytest.raises(paramiko.AuthenticationException):
                transport.auth_publickey("u", key)
            assert transport.auth_interactive("u", answers(pyotp.TOTP(secret).now())) == [PUBLICKEY]
            assert transport.auth_publickey("u", key) == []
            assert transport.is_authenticated()
        finally:
            transport.close()
        assert server.outcomes() == ["failed", "partial", "accepted"]


def test_publickey_only_user_and_banner() -> None:
    key, _text = new_ed25519()
    banner = "\x1b[2J\x1b]0;owned\x07Authorised use only\r\n"
    with SshServer("target", {"u": UserRule([key])}, banner=banner) as server:
        transport = client_transport(tcp(server.port), server.host_key)
        try:
            assert transport.auth_publickey("u", key) == []
            assert transport.is_authenticated()
            assert transport.get_banner() == banner.encode()
        finally:
            transport.close()
        assert server.outcomes() == ["accepted"]


# --- channels ----------------------------------------------------------------------------


def test_echo_greeter_and_channel_failures_through_bastion_and_target(
    ssh_world: World, bastion: paramiko.Transport, target: paramiko.Transport
) -> None:
    echo = ssh_world.open_service(target, "echo")
    data = os.urandom(MiB)
    sender = threading.Thread(target=send_chunks, args=(echo, data))
    sender.start()
    got = bytearray()
    while len(got) < len(data):
        chunk = echo.recv(MiB)
        assert chunk
        got += chunk
    sender.join(10)
    assert bytes(got) == data
    echo.shutdown_write()
    assert echo.recv(10) == b""  # the service's EOF came back
    echo.close()

    greeter = ssh_world.open_service(target, "greeter")
    assert read_line(greeter) == GREETING
    greeter.sendall(b"ping\n")
    assert read_line(greeter) == b"ping\n"
    greeter.close()

    with pytest.raises(paramiko.ChannelException) as refused:
        ssh_world.open_service(target, "refused")
    assert refused.value.code == OPEN_FAILED_CONNECT_FAILED
    with pytest.raises(paramiko.ChannelException) as prohibited:
        # The bastion forwards to its targets only, not to the services behind them.
        bastion.open_channel("direct-tcpip", ("127.0.0.1", ssh_world.service_port("echo")), ("", 0))
    assert prohibited.value.code == OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
    with pytest.raises(paramiko.ChannelException) as session:
        bastion.open_session()
    assert session.value.code == OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
    by_alias = bastion.open_channel("direct-tcpip", ("server-03", 22), ("127.0.0.1", 0))
    assert read_line(by_alias).startswith(b"SSH-2.0-")
    by_alias.close()
    assert wait_for(lambda: ssh_world.targets["server-02"].open_channels() == 0, 2)


def test_64_mib_through_source_and_sink(ssh_world: World, target: paramiko.Transport) -> None:
    size = 64 * MiB
    expected = hashlib.sha256(pattern(size)).hexdigest()
    started = time.monotonic()
    source = ssh_world.open_service(target, "source")
    source.sendall(f"{size}\n".encode())
    digest = hashlib.sha256()
    received = 0
    while chunk := source.recv(MiB):
        digest.update(chunk)
        received += len(chunk)
    source.close()
    assert received == size and digest.hexdigest() == expected
    sink = ssh_world.open_service(target, "sink")
    assert sink_digest(sink, pattern(size), lambda: None) == expected
    sink.close()
    assert time.monotonic() - started < 10


# --- faults ------------------------------------------------------------------------------


def test_keepalive_gets_an_answer(bastion: paramiko.Transport, target: paramiko.Transport) -> None:
    for transport in (bastion, target):
        done = threading.Event()

        def ask(transport: paramiko.Transport = transport, done: threading.Event = done) -> None:
            transport.global_request("keepalive@openssh.com", wait=True)
            done.set()

        threading.Thread(target=ask, daemon=True).start()
        assert done.wait(2), "keepalive@openssh.com got no reply"


def test_drop_connections_kills_the_client_transport(ssh_world: World) -> None:
    server = ssh_world.targets["server-03"]
    outer = ssh_world.login_bastion("bulk")
    try:
        inner = ssh_world.login_target(outer, "server-03")
        try:
            assert server.drop_connections() >= 1
            assert wait_for(lambda: not inner.is_active(), 1.0)
            assert outer.is_active()
        finally:
            inner.close()
        assert ssh_world.bastion.drop_connections() >= 1
        assert wait_for(lambda: not outer.is_active(), 1.0)
    finally:
        outer.close()


def test_rekey_started_by_the_servers_mid_transfer(
    ssh_world: World, target: paramiko.Transport
) -> None:
    size = 32 * MiB
    data = pattern(size)
    rekeyed: list[int] = []
    sink = ssh_world.open_service(target, "sink")

    def rekey_both() -> None:
        time.sleep(0.05)
        rekeyed.append(ssh_world.bastion.rekey())
        rekeyed.append(ssh_world.targets["server-02"].rekey())
        # The sink answers after EOF only: no answer yet means both rekeys were mid-transfer.
        rekeyed.append(int(sink.recv_ready()))

    assert sink_digest(sink, data, rekey_both) == hashlib.sha256(data).hexdigest()
    sink.close()
    assert rekeyed[0] >= 1 and rekeyed[1] >= 1
    assert rekeyed[2] == 0, "the transfer was over before the rekeys finished"


def test_fault_proxy_pause_resume_and_cut(ssh_world: World, fault_bastion: FaultBastion) -> None:
    proxy = fault_bastion.proxy
    transport = ssh_world.login_bastion("bulk", port=proxy.port)
    try:
        assert proxy.connections == 1
        proxy.pause()
        done = threading.Event()

        def ask() -> None:
            try:
                transport.global_request("keepalive@openssh.com", wait=True)
            finally:
                done.set()

        threading.Thread(target=ask, daemon=True).start()
        assert not done.wait(1.0), "a keepalive got through a paused proxy"
        assert transport.is_active()
        proxy.resume()
        assert done.wait(2.0), "no keepalive reply after resume"
        assert proxy.cut() == 1
        assert wait_for(lambda: not transport.is_active(), 1.0)
        assert wait_for(lambda: proxy.connections == 0, 1.0)
        assert proxy.accepted == 1
    finally:
        transport.close()


# --- life cycle ----------------------------------------------------------------------------


def test_stop_leaves_no_thread_behind() -> None:
    before = set(threading.enumerate())
    services = start_services(("echo",))
    key, _text = new_ed25519()
    server = SshServer("stopper", {"u": UserRule([key])})
    server.start()
    transport = client_transport(tcp(server.port), server.host_key)
    try:
        transport.auth_publickey("u", key)
        channel = transport.open_channel(
            "direct-tcpip", ("localhost", services["echo"].port), ("127.0.0.1", 0)
        )
        channel.sendall(b"x")
        assert channel.recv(1) == b"x"
        assert server.open_channels() == 1
        assert len(server.active_transports()) == 1
        assert server_threads(server)
        server.stop()
        assert server_threads(server) == []
        assert server.active_transports() == []
        assert wait_for(lambda: not transport.is_active(), 2.0)
    finally:
        transport.close()
        for service in services.values():
            service.stop()
    assert wait_for(lambda: set(threading.enumerate()) <= before, 2.0), [
        t.name for t in set(threading.enumerate()) - before
    ]


def test_services_and_fault_proxy_stop_cleanly() -> None:
    before = set(threading.enumerate())
    with Service("echo") as echo, FaultProxy(echo.port) as proxy:
        sock = tcp(proxy.port)
        sock.sendall(b"hello")
        assert sock.recv(5) == b"hello"
    with pytest.raises(ConnectionResetError):  # stop() resets what the proxy carries
        sock.recv(5)
    sock.close()
    assert set(threading.enumerate()) <= before


# --- the fixtures --------------------------------------------------------------------------


def test_bulk_config_loads_and_the_secret_is_stored(
    ssh_world: World, bulk_config: Path, isolated_dirs: Path
) -> None:
    config = load_config(bulk_config)
    assert config.inventory.bastions[BASTION].port == ssh_world.bastion.port
    assert not config.inventory.bastions[BASTION].otp_single_use
    for alias, server in ssh_world.targets.items():
        host = config.inventory.hosts[alias]
        assert (host.port, host.connect_host, host.user) == (server.port, "127.0.0.1", "bulk")
    for name in (*SERVICE_KINDS, "refused"):
        assert config.services.get(name).remote_port == ssh_world.service_port(name)
    assert config.settings.known_hosts == (ssh_world.known_hosts,)
    assert SecretStore().get(BASTION) == parse_secret(ssh_world.secret("bulk"))
    assert any(isolated_dirs.rglob("*.cfg")), "the keyring file is not in the test's home"


def test_op_config_is_single_use(ssh_world: World, op_config: Path) -> None:
    config = load_config(op_config)
    assert config.inventory.bastions[BASTION].user == "op"
    assert config.inventory.bastions[BASTION].otp_single_use
    assert SecretStore().get(BASTION) == parse_secret(ssh_world.secret("op"))


def test_fault_bastion_config_points_at_the_proxy(fault_bastion: FaultBastion) -> None:
    config = load_config(fault_bastion.config)
    assert config.inventory.bastions[BASTION].port == fault_bastion.port


# --- OpenSSH -------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")
def test_openssh_client_through_the_bastion_as_proxyjump(ssh_world: World, tmp_path: Path) -> None:
    askpass = tmp_path / "askpass"
    askpass.write_text(
        f"#!{sys.executable}\nimport pyotp\nprint(pyotp.TOTP({ssh_world.secret('bulk')!r}).now())\n"
    )
    askpass.chmod(0o700)
    # ProxyJump hands the jump ssh only -F, not -o options: everything is in this file,
    # which (like -F /dev/null) keeps the user's own ssh config out.
    config = tmp_path / "ssh_config"
    config.write_text(
        f"""Host bastion
  HostName 127.0.0.1
  Port {ssh_world.bastion.port}
  IdentityFile {ssh_world.identity_files[BASTION]}
Host target
  HostName 127.0.0.1
  Port {ssh_world.targets["server-02"].port}
  IdentityFile {ssh_world.identity_files["server-02"]}
  ProxyJump bastion
Host *
  User bulk
  UserKnownHostsFile {ssh_world.known_hosts}
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  IdentitiesOnly yes
  IdentityAgent none
  PasswordAuthentication no
  KbdInteractiveAuthentication yes
  UpdateHostKeys no
  ControlMaster no
  ControlPath none
  ConnectTimeout 5
  LogLevel ERROR
"""
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "SSH_ASKPASS": str(askpass),
        "SSH_ASKPASS_REQUIRE": "force",
    }
    before = ssh_world.bastion.logins(user="bulk")
    message = b"hello through OpenSSH\n"
    result = subprocess.run(
        ["ssh", "-F", str(config), "-W", f"127.0.0.1:{ssh_world.service_port('echo')}", "target"],
        input=message,
        capture_output=True,
        env=env,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == message
    assert ssh_world.bastion.logins(user="bulk") == before + 1
