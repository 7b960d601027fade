"""`bastionctl tunnel` against the real lab: bastion with key + TOTP, private hosts behind it."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import pymysql
import pyotp
import pytest

from bastionctl.lab import LabInfo
from tests.conftest import VIEWS

from .conftest import OpPacer
from .helpers import (
    LogWatch,
    TunnelProcess,
    free_port,
    listening,
    mysql_login,
    run_cli,
    store_secret,
    write_config,
)

pytestmark = pytest.mark.lab
MIB = 1024 * 1024


def mysql_cli(lab: LabInfo, port: int, query: str) -> str:
    result = subprocess.run(
        [
            "mysql",
            f"--defaults-extra-file={lab.mysql_defaults_file}",
            "-h",
            "127.0.0.1",
            "-P",
            str(port),
            "-N",
            "-B",
            lab.mysql_database,
            "-e",
            query,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@VIEWS
def test_mysql_client_through_default_tunnel(
    lab: LabInfo, bulk_config: Path, platform_view: str
) -> None:
    assert not listening(53306), "port 53306 is taken on this machine"
    with TunnelProcess(["--config", str(bulk_config), "tunnel", "mysql", "server-02"]) as tunnel:
        assert tunnel.ready, tunnel.stdout_lines
        assert "connect with: mysql -h 127.0.0.1 -P 53306" in "".join(tunnel.stdout_lines)
        out = mysql_cli(lab, 53306, "SELECT id, msg FROM greetings WHERE id = 1")
    assert out.strip().split("\t") == [str(v) for v in lab.mysql_expected_row]
    assert tunnel.proc is not None and tunnel.proc.returncode == 0
    assert "Tunnel closed." in "".join(tunnel.stdout_lines)
    assert not listening(53306)


def echo_roundtrip(port: int, size: int) -> tuple[str, str, int]:
    """Send `size` random bytes to an echo service and read them back concurrently."""
    payload = os.urandom(size)
    received = hashlib.sha256()
    count = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:

        def reader() -> None:
            nonlocal count
            while count < size:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                received.update(chunk)
                count += len(chunk)

        thread = threading.Thread(target=reader)
        thread.start()
        conn.sendall(payload)
        thread.join(timeout=120)
    return hashlib.sha256(payload).hexdigest(), received.hexdigest(), count


@pytest.mark.parametrize(("service", "host"), [("rdp", "server-04"), ("mssql", "server-03")])
def test_64_mib_through_standin_tunnels(
    lab: LabInfo, bulk_config: Path, service: str, host: str
) -> None:
    port = free_port()
    kind = lab.hosts[host].services[{"rdp": 3389, "mssql": 1433}[service]]
    assert "standin" in kind  # the lab names its stand-ins as such
    args = ["--config", str(bulk_config), "tunnel", service, host, "--local-port", str(port)]
    with TunnelProcess(args) as tunnel:
        assert tunnel.ready, tunnel.stdout_lines
        sent, got, count = echo_roundtrip(port, 64 * MIB)
    assert count == 64 * MIB
    assert got == sent


def test_64_mib_through_mysql_tunnel_to_real_mariadb(lab: LabInfo, bulk_config: Path) -> None:
    port = free_port()
    blob = os.urandom(64 * MIB)
    args = ["--config", str(bulk_config), "tunnel", "mysql", "server-02", "--local-port", str(port)]
    with TunnelProcess(args) as tunnel:
        assert tunnel.ready
        conn = pymysql.connect(
            host="127.0.0.1",
            port=port,
            **mysql_login(lab),
            database=lab.mysql_database,
            max_allowed_packet=256 * MIB,
            read_timeout=120,
            write_timeout=120,
        )
        try:
            with conn.cursor() as cursor:
                cursor.execute("CREATE TEMPORARY TABLE blobs (id INT PRIMARY KEY, data LONGBLOB)")
                cursor.execute("INSERT INTO blobs VALUES (1, %s)", (blob,))
                cursor.execute("SELECT SHA2(data, 256), LENGTH(data) FROM blobs WHERE id = 1")
                server_sha, length = cursor.fetchone()
                cursor.execute("SELECT data FROM blobs WHERE id = 1")
                (echoed,) = cursor.fetchone()
        finally:
            conn.close()
    expected = hashlib.sha256(blob).hexdigest()
    assert (server_sha, length) == (expected, 64 * MIB)  # upload arrived intact
    assert hashlib.sha256(echoed).hexdigest() == expected  # and came back intact


def test_rdp_tunnel_reaches_real_xrdp_tls(lab: LabInfo, bulk_config: Path) -> None:
    assert lab.xrdp_real, "xrdp did not run in the lab; the RDP check needs the real server"
    port = free_port()
    args = ["--config", str(bulk_config), "tunnel", "rdp", "server-03", "--local-port", str(port)]
    with TunnelProcess(args) as tunnel:
        assert tunnel.ready
        with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
            cookie = b"Cookie: mstshash=bastionctl\r\n"
            neg_req = struct.pack("<BBHI", 0x01, 0, 8, 0x01)  # RDP_NEG_REQ: PROTOCOL_SSL
            x224 = bytes([6 + len(cookie) + len(neg_req), 0xE0, 0, 0, 0, 0, 0]) + cookie + neg_req
            conn.sendall(struct.pack(">BBH", 3, 0, 4 + len(x224)) + x224)
            header = conn.recv(4, socket.MSG_WAITALL)
            assert header[0] == 3  # TPKT
            body = conn.recv(struct.unpack(">H", header[2:])[0] - 4, socket.MSG_WAITALL)
            assert body[1] == 0xD0  # X.224 Connection Confirm
            neg_type, _flags, _length, protocol = struct.unpack("<BBHI", body[-8:])
            assert (neg_type, protocol) == (0x02, 0x01)  # RDP_NEG_RSP selecting TLS
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with context.wrap_socket(conn) as tls:
                assert tls.getpeercert(binary_form=True)
                assert tls.version() is not None


def test_reverse_order_keyboard_interactive_then_publickey(lab: LabInfo, tmp_path: Path) -> None:
    config = write_config(
        lab, tmp_path / "rev.toml", bulk=True, bastion_port=lab.bastion_reverse_port
    )
    store_secret(config, lab.read_secret(bulk=True))
    watch = LogWatch(lab.bastion_sshd_log)
    port = free_port()
    args = ["--config", str(config), "tunnel", "mysql", "server-02", "--local-port", str(port)]
    with TunnelProcess(args) as tunnel:
        assert tunnel.ready, tunnel.stderr_text
        assert "hello from server-02" in mysql_cli(lab, port, "SELECT msg FROM greetings")
    log = "\n".join(watch.lines())
    assert f"port {lab.bastion_reverse_port}" in log
    partial = log.find("Partial keyboard-interactive")
    accepted = log.find("Accepted publickey")
    assert 0 <= partial < accepted, log


def codes_around(secret: str, start: float, end: float) -> set[str]:
    totp = pyotp.TOTP(secret)
    return {totp.at(t) for t in range(int(start) - 60, int(end) + 60, 30)}


def test_totp_from_keyring_no_prompt_and_no_reuse(
    lab: LabInfo, tmp_path: Path, env_with: dict[str, str], op_pacer: OpPacer
) -> None:
    """Two logins as the op user (google-authenticator defaults) with the secret stored."""
    # persist = 0: the agent closes the first login with its tunnel, so the second logs in.
    config = write_config(lab, tmp_path / "op.toml", bulk=False, persist=0)
    store_secret(config, lab.read_secret(bulk=False))
    steps_file = Path(env_with["XDG_STATE_HOME"]) / "bastionctl" / "otp-steps.json"
    for attempt in range(2):
        op_pacer.wait()
        watch = LogWatch(lab.bastion_sshd_log)
        before = steps_file.read_text() if steps_file.exists() else "{}"
        started_step = int(time.time() // 30)
        port = free_port()
        args = ["--config", str(config), "tunnel", "mysql", "server-02", "--local-port", str(port)]
        # stdin is /dev/null: any prompt would fail the login, so success means no prompt.
        with TunnelProcess(args, env=env_with) as tunnel:
            assert tunnel.ready, (tunnel.stdout_lines, tunnel.stderr_text)
            assert "hello from server-02" in mysql_cli(lab, port, "SELECT msg FROM greetings")
        assert "reading standard input" not in tunnel.stderr_text
        assert "Accepted keyboard-interactive/pam for " + lab.op_user in "\n".join(watch.lines())
        import json

        previous = json.loads(before).get("server-01")
        if attempt == 1:
            # The first login's step was recorded; reusing it would be rejected, so the
            # second login must have waited when it started inside that same step.
            assert previous is not None
            waited = "already used in this step; waiting" in tunnel.stderr_text
            assert waited == (previous >= started_step), tunnel.stderr_text


def proc_cmdlines() -> str:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out.append(
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except OSError:
                continue
    return "\n".join(out)


def test_secrets_never_in_debug_logs_or_argv(
    lab: LabInfo, tmp_path: Path, env_with: dict[str, str], op_pacer: OpPacer
) -> None:
    secret = lab.read_secret(bulk=False)
    config = write_config(lab, tmp_path / "op.toml", bulk=False)
    store_secret(config, secret)
    op_pacer.wait()
    start = time.time()
    port = free_port()
    args = [
        "--debug",
        "--config",
        str(config),
        "tunnel",
        "mysql",
        "server-02",
        "--local-port",
        str(port),
    ]
    with TunnelProcess(args, env=env_with) as tunnel:
        assert tunnel.ready, tunnel.stderr_text
        mysql_cli(lab, port, "SELECT 1")
        argv = proc_cmdlines()
    end = time.time()
    output = "".join(tunnel.stdout_lines) + tunnel.stderr_text
    assert "DEBUG" in tunnel.stderr_text  # debug logging really was on (paramiko included)
    for code in codes_around(secret, start, end):
        assert code not in output and code not in argv
    assert secret not in output and secret not in argv
    state_files = [p for p in Path(env_with["XDG_STATE_HOME"]).rglob("*") if p.is_file()]
    assert all(secret not in p.read_text(errors="replace") for p in state_files)


def test_wrong_totp_is_one_attempt_one_error(
    lab: LabInfo, tmp_path: Path, env_with: dict[str, str], op_pacer: OpPacer
) -> None:
    config = write_config(lab, tmp_path / "op.toml", bulk=False)
    store_secret(config, pyotp.random_base32())  # a valid secret, but not the bastion's
    op_pacer.wait()
    watch = LogWatch(lab.bastion_sshd_log)
    port = free_port()
    args = ["--config", str(config), "tunnel", "mysql", "server-02", "--local-port", str(port)]
    tunnel = TunnelProcess(args, env=env_with).start()
    code = tunnel.stop()
    assert code == 1
    errors = [
        line for line in tunnel.stderr_text.splitlines() if line.startswith("bastionctl: error")
    ]
    assert len(errors) == 1 and "rejected" in errors[0] and "not retrying" in errors[0]
    assert "Traceback" not in tunnel.stderr_text
    time.sleep(0.5)  # let sshd finish writing its log
    attempts = [
        line
        for line in watch.lines()
        if "keyboard-interactive" in line and ("Failed" in line or "Accepted" in line)
    ]
    assert len(attempts) == 1 and "Failed" in attempts[0], attempts
    assert not listening(port)


def test_unknown_bastion_host_key_is_refused(lab: LabInfo, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = write_config(lab, tmp_path / "c.toml", bulk=True, known_hosts=empty)
    store_secret(config, lab.read_secret(bulk=True))
    watch = LogWatch(lab.bastion_sshd_log)
    port = free_port()
    result = run_cli(
        "--config", str(config), "tunnel", "mysql", "server-02", "--local-port", str(port)
    )
    assert result.returncode == 1
    assert "unknown host key for server-01" in result.stderr and "SHA256:" in result.stderr
    assert "connect with" not in result.stdout
    assert not listening(port)
    time.sleep(0.3)
    assert not [line for line in watch.lines() if "Accepted" in line or "Failed" in line]


def test_changed_bastion_host_key_is_refused(lab: LabInfo, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    key = other.with_suffix(".pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"{lab.bastion_ipv6} {key[0]} {key[1]}\n")
    config = write_config(lab, tmp_path / "c.toml", bulk=True, known_hosts=known)
    result = run_cli(
        "--config", str(config), "tunnel", "mysql", "server-02", "--local-port", str(free_port())
    )
    assert result.returncode == 1
    assert "HOST KEY CHANGED for server-01" in result.stderr


def test_local_port_in_use_is_named_and_costs_no_login(lab: LabInfo, bulk_config: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        watch = LogWatch(lab.bastion_sshd_log)
        result = run_cli(
            "--config", str(bulk_config), "tunnel", "mysql", "server-02", "--local-port", str(port)
        )
    assert result.returncode == 1
    assert f"local port {port} is already in use" in result.stderr
    assert "--local-port" in result.stderr
    time.sleep(0.3)
    assert not [line for line in watch.lines() if "Connection from" in line]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["tunnel", "mysql", "server-99"],
            "unknown host 'server-99'; valid hosts: server-02, server-03, server-04",
        ),
        (
            ["tunnel", "vnc", "server-02"],
            "unknown service 'vnc'; valid services: mssql, mysql, rdp",
        ),
    ],
)
def test_unknown_host_or_service_is_a_usage_error(
    lab: LabInfo, bulk_config: Path, args: list[str], needle: str
) -> None:
    result = run_cli("--config", str(bulk_config), *args)
    assert result.returncode == 2
    assert needle in result.stderr
