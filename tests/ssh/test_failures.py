"""Every failure of the connect path is one line on stderr (README: When things fail), against
real parts: a TCP server that never speaks, a real http.server on the bastion's port, paramiko
servers that refuse the key, the code, the password, every method bastionctl offers, or the
target; known_hosts that does not know, has another, or revokes the bastion's key.

Library log records (paramiko's tracebacks from its transport thread) reach stderr only with
--debug, which adds them and the traceback.
"""

from __future__ import annotations

import http.server
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from bastionctl.otp import SecretStore, parse_secret
from bastionctl.ssh.hostkeys import fingerprint
from tests.lab.helpers import run_cli
from tests.ssh.helpers import CLI_TIMEOUT
from tests.ssh.server import SshServer, UserRule, new_ed25519, public_line
from tests.ssh.services import free_port
from tests.ssh.world import BASTION, World

TIMEOUT = 2  # the configs' connect_timeout here
TUNNEL = ("tunnel", "echo", "server-02")


def lines(stderr: str) -> list[str]:
    return stderr.splitlines()


def configured(world: World, path: Path, port: int, known_hosts: Path | None = None) -> Path:
    """The bulk user's config with the bastion at 127.0.0.1:`port`, connect_timeout TIMEOUT."""
    text = world.config_text("bulk", bastion_port=port, known_hosts=known_hosts)
    text = text.replace("connect_timeout = 5\n", f"connect_timeout = {TIMEOUT}\n")
    path.write_text(text)
    return path


def tunnel(config: Path, *options: str, stdin: str = "") -> tuple[int, str, float]:
    started = time.monotonic()
    result = run_cli(*options, "--config", str(config), *TUNNEL, stdin=stdin, timeout=CLI_TIMEOUT)
    assert result.stdout == "", result.stdout
    return result.returncode, result.stderr, time.monotonic() - started


def assert_one_line(stderr: str, *needles: str) -> str:
    [line] = lines(stderr)
    assert line.startswith("bastionctl: error: "), line
    for needle in needles:
        assert needle in line, line
    assert "internal error" not in line and "Traceback" not in stderr
    assert "paramiko" not in stderr
    return line


# --- servers that are no SSH servers ---------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A listener that completes every TCP handshake (the kernel does) and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


@pytest.fixture
def web_port() -> Iterator[int]:
    """A real http.server on 127.0.0.1."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_tcp_server_that_never_speaks_is_one_line_within_the_timeout(
    ssh_world: World, tmp_path: Path, silent_port: int
) -> None:
    config = configured(ssh_world, tmp_path / "silent.toml", silent_port)
    code, stderr, took = tunnel(config)
    assert code == 1
    assert took < TIMEOUT + 3, took
    assert_one_line(
        stderr,
        f"bastion {BASTION} at 127.0.0.1:{silent_port} accepted the connection but sent no "
        f"SSH banner within {TIMEOUT} s",
    )


@pytest.mark.parametrize("option", [None, "-v"])
def test_a_web_server_on_the_bastion_port_is_one_line(
    ssh_world: World, tmp_path: Path, web_port: int, option: str | None
) -> None:
    config = configured(ssh_world, tmp_path / "web.toml", web_port)
    code, stderr, _took = tunnel(config, *([option] if option else []))
    assert code == 1
    error = f"bastion {BASTION} at 127.0.0.1:{web_port} is not an SSH server (it answered "
    if option is None:
        assert_one_line(stderr, error)
    else:
        # -v adds bastionctl's own INFO records (timestamped), never a library's.
        assert "paramiko" not in stderr and "Traceback" not in stderr
        records = lines(stderr)[:-1]
        assert records and all(" INFO bastionctl." in line for line in records), records
        assert lines(stderr)[-1].startswith(f"bastionctl: error: {error}")


def test_debug_adds_the_library_records_and_the_traceback(
    ssh_world: World, tmp_path: Path, web_port: int
) -> None:
    config = configured(ssh_world, tmp_path / "web.toml", web_port)
    code, stderr, _took = tunnel(config, "--debug")
    assert code == 1
    assert "paramiko.transport" in stderr
    assert "Traceback (most recent call last):" in stderr
    assert lines(stderr)[-1].startswith(f"bastionctl: error: bastion {BASTION} at 127.0.0.1:")
    assert sum("bastionctl: error:" in line for line in lines(stderr)) == 1


def test_a_refused_port_and_a_name_that_does_not_resolve_are_one_line(
    ssh_world: World, tmp_path: Path
) -> None:
    port = free_port()
    config = configured(ssh_world, tmp_path / "refused.toml", port)
    code, stderr, _took = tunnel(config)
    assert code == 1
    assert_one_line(stderr, f"bastion {BASTION} at 127.0.0.1:{port} refused the connection")
    text = config.read_text().replace('ipv4 = "127.0.0.1"\n', 'fqdn = "bastion.invalid"\n', 1)
    config.write_text(text)
    code, stderr, _took = tunnel(config)
    assert code == 1
    assert_one_line(stderr, f"cannot resolve bastion.invalid, the address of bastion {BASTION}")


# --- host keys ---------------------------------------------------------------------------------


def test_an_unknown_host_key_is_said_once_with_its_fingerprint(
    ssh_world: World, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "empty.known_hosts"
    known_hosts.write_text("")
    config = configured(ssh_world, tmp_path / "unknown.toml", ssh_world.bastion.port, known_hosts)
    code, stderr, _took = tunnel(config)
    assert code == 1
    line = assert_one_line(
        stderr,
        f"unknown host key for {BASTION} ([127.0.0.1]:{ssh_world.bastion.port}): ",
        fingerprint(ssh_world.bastion.host_key),
    )
    assert len(re.findall(r"SHA256:", line)) == 1


@pytest.mark.parametrize("how", ["changed", "revoked"])
def test_a_changed_or_revoked_host_key_is_one_line(
    ssh_world: World, tmp_path: Path, how: str
) -> None:
    port = ssh_world.bastion.port
    other, _text = new_ed25519()
    known_hosts = tmp_path / f"{how}.known_hosts"
    if how == "changed":
        known_hosts.write_text(f"[127.0.0.1]:{port} {public_line(other)}\n")
        needles = ["HOST KEY CHANGED", fingerprint(other), fingerprint(ssh_world.bastion.host_key)]
    else:
        known_hosts.write_text(
            ssh_world.known_hosts.read_text()
            + f"@revoked * {public_line(ssh_world.bastion.host_key)}\n"
        )
        needles = ["is revoked in", f"{known_hosts}:4"]
    config = configured(ssh_world, tmp_path / f"{how}.toml", port, known_hosts)
    code, stderr, _took = tunnel(config)
    assert code == 1
    assert_one_line(stderr, *needles)


# --- logins ------------------------------------------------------------------------------------


@pytest.fixture
def bastion(ssh_world: World) -> Iterator[SshServer]:
    """A bastion of this test's own (the world's host key, users and forward): tests change
    its prompt and users without touching the session's world."""
    server = SshServer(
        BASTION,
        {
            "bulk": UserRule(
                [ssh_world.client_keys[BASTION]],
                totp_secret=ssh_world.secret("bulk"),
                disallow_reuse=False,
                rate_limit=None,
            )
        },
        host_key=ssh_world.bastion.host_key,
        forward=ssh_world.bastion.forward,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def own_config(world: World, tmp_path: Path, server: SshServer) -> Path:
    known_hosts = world.known_hosts_via(server.port, tmp_path / "own.known_hosts")
    return configured(world, tmp_path / "own.toml", server.port, known_hosts)


def test_a_refused_key_is_one_line(ssh_world: World, tmp_path: Path, bastion: SshServer) -> None:
    config = own_config(ssh_world, tmp_path, bastion)
    # The key of another host: the bastion does not know it.
    config.write_text(
        config.read_text().replace(
            str(ssh_world.identity_files[BASTION]), str(ssh_world.identity_files["server-03"]), 1
        )
    )
    code, stderr, _took = tunnel(config)
    assert code == 1
    assert_one_line(stderr, f"{BASTION} refused the key for bulk@127.0.0.1", "check identity_file")


def test_a_rejected_code_from_the_keyring_is_one_line(
    ssh_world: World, tmp_path: Path, bastion: SshServer
) -> None:
    config = own_config(ssh_world, tmp_path, bastion)
    SecretStore().set(BASTION, parse_secret(ssh_world.secret("op")))  # another user's secret
    code, stderr, _took = tunnel(config)
    assert code == 1
    assert_one_line(
        stderr,
        f"{BASTION} rejected the TOTP code (the keyring's TOTP secret); not retrying",
        f"bastionctl otp code {BASTION}",
    )
    assert bastion.attempts(user="bulk") == 1


def test_a_rejected_typed_code_is_one_line_after_the_question(
    ssh_world: World, tmp_path: Path, bastion: SshServer
) -> None:
    config = own_config(ssh_world, tmp_path, bastion)
    code, stderr, _took = tunnel(config, stdin="000000\n")
    assert code == 1
    question, error = lines(stderr)
    assert question == f"{BASTION}: Verification code: (reading standard input)"
    assert error.startswith(
        f"bastionctl: error: {BASTION} rejected the TOTP code (the code you typed)"
    )


def test_a_wrong_password_is_one_line_after_the_question(
    ssh_world: World, tmp_path: Path, bastion: SshServer
) -> None:
    bastion.prompt = "Password: "
    config = own_config(ssh_world, tmp_path, bastion)
    code, stderr, _took = tunnel(config, stdin="hunter2\n")
    assert code == 1
    question, error = lines(stderr)
    assert question == f"{BASTION}: Password: (reading standard input)"
    assert error.startswith(
        f"bastionctl: error: {BASTION} rejected the answer you typed to 'Password:' (user bulk)"
    )
    assert "TOTP" not in error and "hunter2" not in stderr


class PasswordOnly(paramiko.ServerInterface):
    """A server that takes passwords only (PasswordAuthentication yes, nothing else)."""

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_FAILED


class PasswordOnlyServer(SshServer):
    def _serve(self, transport: paramiko.Transport) -> None:
        try:
            transport.add_server_key(self.host_key)
            transport.start_server(server=PasswordOnly())
            while transport.is_active() and not self._stopping:
                time.sleep(0.05)
        except (paramiko.SSHException, EOFError, OSError):
            pass
        finally:
            transport.close()


def test_no_method_bastionctl_offers_is_one_line(ssh_world: World, tmp_path: Path) -> None:
    with PasswordOnlyServer(BASTION, {}, host_key=ssh_world.bastion.host_key) as server:
        config = own_config(ssh_world, tmp_path, server)
        code, stderr, _took = tunnel(config)
    assert code == 1
    assert_one_line(
        stderr,
        f"{BASTION} wants password after none; bastionctl logs in with publickey and "
        "keyboard-interactive only",
    )


def test_a_bastion_that_may_not_reach_the_target_is_one_line(
    ssh_world: World, tmp_path: Path, bastion: SshServer, bulk_config: Path
) -> None:
    bastion.forward = lambda _host, _port: None  # administratively prohibited, every time
    config = own_config(ssh_world, tmp_path, bastion)
    code, stderr, _took = tunnel(config)
    assert code == 1
    target = ssh_world.targets["server-02"].port
    assert_one_line(
        stderr,
        f"error: bastion {BASTION} does not allow forwarding to 127.0.0.1:{target} "
        "(administratively prohibited), on the way to server-02",
    )
