"""The lab itself: isolation, the bastion's real TOTP rules, and a clean `lab down`."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pyotp
import pytest

from bastionctl.lab import LabInfo
from bastionctl.otp import UsedSteps

from .conftest import OpPacer, require_lab
from .helpers import run_cli

pytestmark = pytest.mark.lab


def test_private_subnet_is_not_reachable_from_the_host(lab: LabInfo) -> None:
    target = lab.hosts["server-02"].ipv6
    route = subprocess.run(["ip", "-6", "route", "get", target], capture_output=True, text=True)
    assert route.returncode != 0 and "no route to host" in route.stderr.lower()
    with socket.socket(socket.AF_INET6) as probe:
        probe.settimeout(3)
        with pytest.raises(OSError) as refused:
            probe.connect((target, 22))
    assert refused.value.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES)
    forwarding = subprocess.run(
        ["ip", "netns", "exec", lab.bastion_ns, "cat", "/proc/sys/net/ipv6/conf/all/forwarding"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert forwarding.stdout.strip() == "0"  # the bastion is no router


def login(lab: LabInfo, user: str, code: str) -> bool:
    """Key then TOTP with paramiko, one attempt; True when the bastion let us in."""
    sock = socket.create_connection((lab.bastion_ipv6, 22), timeout=10)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        key = paramiko.PKey.from_path(lab.client_keys["server-01"])
        remaining = transport.auth_publickey(user, key)
        assert remaining == ["keyboard-interactive"]  # the key alone is not enough
        try:
            transport.auth_interactive(user, lambda _t, _i, prompts: [code for _ in prompts])
        except paramiko.AuthenticationException:
            return False
        return transport.is_authenticated()
    finally:
        transport.close()


def test_bastion_rejects_a_reused_code_for_the_default_user(
    lab: LabInfo, op_pacer: OpPacer, op_state: Path
) -> None:
    totp = pyotp.TOTP(lab.read_secret(bulk=False))
    op_pacer.wait()
    step = int(time.time() // 30)
    # Tell bastionctl's own tests this step is spent, as bastionctl itself would record it.
    UsedSteps(op_state / "bastionctl" / "otp-steps.json").claim("server-01", step)
    code = totp.at(step * 30)
    assert login(lab, lab.op_user, code)
    op_pacer.wait()
    assert not login(lab, lab.op_user, code)  # same code again: rejected (DISALLOW_REUSE)


def test_bulk_user_has_no_reuse_ban(lab: LabInfo) -> None:
    code = pyotp.TOTP(lab.read_secret(bulk=True)).now()
    assert login(lab, lab.bulk_user, code)
    assert login(lab, lab.bulk_user, code)
    assert not login(lab, lab.bulk_user, "000000" if code != "000000" else "111111")


def lab_env(name: str, net_id: int) -> dict[str, str]:
    env = os.environ.copy()
    env.update(
        BASTIONCTL_LAB_NAME=name,
        BASTIONCTL_LAB_NET_ID=str(net_id),
        BASTIONCTL_LAB_DIR=f"/var/lib/bastionctl-lab/{name}",
    )
    return env


def running(pid: int) -> bool:
    """Alive and not a zombie (the daemons' new parent reaps them a moment after death)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state == "Z":
            return False
        time.sleep(0.1)
    return True


def leftovers(name: str, pids: list[int], net_id: int) -> list[str]:
    found = [
        ns
        for ns in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True
        ).stdout.split()
        if ns.startswith(f"{name}-")
    ]
    if Path(f"/sys/class/net/{name}-h0").exists():
        found.append(f"veth {name}-h0")
    found += [f"pid {pid}" for pid in pids if running(pid)]
    for user in (f"{name}-op", f"{name}-bulk"):
        if getent("passwd", user).returncode == 0:
            found.append(f"user {user}")
    found += [str(p) for p in Path("/etc/netns").glob(f"{name}-*")]
    root = Path(f"/var/lib/bastionctl-lab/{name}")
    if root.exists():
        found.append(str(root))
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {line}" for line in mounts.splitlines() if f"/{name}" in line]
    for family, fence in (("-6", f"fd00:bc1:{net_id:x}::/48"), ("-4", f"10.213.{net_id}.0/24")):
        shown = subprocess.run(["ip", family, "route", "show", fence], capture_output=True)
        if shown.stdout.strip():
            found.append(f"route {fence}")
    return found


ACCOUNT_FILES = ("passwd", "group", "shadow", "gshadow")


def account_files() -> dict[str, bytes]:
    return {name: Path("/etc", name).read_bytes() for name in ACCOUNT_FILES}


def getent(*args: str, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    return subprocess.run([*prefix, "getent", *args], capture_output=True, text=True)


def test_lab_cli_up_is_idempotent_and_down_leaves_nothing(isolated_dirs: Path) -> None:
    require_lab()
    env = lab_env("bcld", 3)
    run_cli("lab", "down", env=env)  # an interrupted earlier run
    host_accounts = account_files()
    try:
        first = run_cli("lab", "up", env=env)
        assert first.returncode == 0, first.stderr
        # The lab's accounts exist for its daemons only: the host's files are untouched.
        assert account_files() == host_accounts
        assert getent("passwd", "bcld-op").returncode == 2
        inside = getent("passwd", "bcld-op", ns="bcld-bastion")
        assert inside.returncode == 0, inside.stderr
        uid = int(inside.stdout.split(":")[2])
        assert getent("passwd", str(uid)).returncode == 2  # no host account has that id
        assert getent("group", str(uid)).returncode == 2
        secret = Path("/var/lib/bastionctl-lab/bcld/home/bcld-op/.google_authenticator")
        assert secret.stat().st_uid == uid
        assert getent("passwd", "bcld-bulk", ns="bcld-srv02").returncode == 0
        assert "TOTP secret of server-01 stored in the keyring" in first.stdout
        config = isolated_dirs / "config" / "bastionctl" / "lab.toml"
        assert config.stat().st_mode & 0o777 == 0o600
        hosts = run_cli("hosts", "--json", env=env)  # the lab config is the default now
        assert hosts.returncode == 0 and "server-04" in hosts.stdout
        info = LabInfo.load(Path("/var/lib/bastionctl-lab/bcld"))
        pids = list(info.pids.values())
        again = run_cli("lab", "up", env=env)
        assert again.returncode == 0
        assert LabInfo.load(Path("/var/lib/bastionctl-lab/bcld")).pids == info.pids
        assert run_cli("lab", "status", env=env).returncode == 0
    finally:
        removed = run_cli("lab", "down", env=env)
    assert removed.returncode == 0, removed.stderr
    assert "removed namespace bcld-bastion" in removed.stdout
    assert leftovers("bcld", pids, 3) == []
    assert account_files() == host_accounts
    assert not config.exists()
    status = run_cli("lab", "status", env=env)
    assert status.returncode == 1 and "down" in status.stdout


def journal(name: str) -> list[int]:
    try:
        text = Path(f"/var/lib/bastionctl-lab/{name}/run/pids").read_text()
    except OSError:
        return []
    return [int(line.split()[0]) for line in text.splitlines() if line.strip()]


def namespace_exists(ns: str) -> bool:
    return Path("/run/netns", ns).exists()


# Points in `lab up` to kill it at, each seen from outside: the directory made, the network
# half built, the bastion's sshd started, MariaDB's data directory being made.
KILL_POINTS = {
    "directory": lambda name: Path(f"/var/lib/bastionctl-lab/{name}").exists(),
    "network": lambda name: namespace_exists(f"{name}-srv03"),
    "bastion sshd": lambda name: len(journal(name)) >= 1,
    "target sshd": lambda name: len(journal(name)) >= 3,
    "mariadb": lambda name: Path(f"/var/lib/bastionctl-lab/{name}/hosts/server-02/mysql").exists(),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_lab_down_after_a_killed_lab_up_leaves_nothing(point: str, isolated_dirs: Path) -> None:
    require_lab()
    name, net_id = "bclk", 5
    env = lab_env(name, net_id)
    run_cli("lab", "down", env=env)
    host_accounts = account_files()
    reached = KILL_POINTS[point]
    up = subprocess.Popen(
        [sys.executable, "-m", "bastionctl", "lab", "up"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not reached(name):
            assert up.poll() is None, f"lab up ended before {point}: {up.stderr}"
            assert time.monotonic() < deadline, f"lab up never reached {point}"
            time.sleep(0.005)
        up.kill()  # SIGKILL: no clean-up of its own runs
        up.wait()
        pids = journal(name)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        removed = run_cli("lab", "down", env=env)
    assert removed.returncode == 0, removed.stderr
    assert leftovers(name, pids, net_id) == []
    assert account_files() == host_accounts


def test_lab_without_root_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastionctl.cli import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit) as exited:
        main(["lab", "up"])
    assert exited.value.code == 1
    assert capsys.readouterr().err == (
        "bastionctl: error: the lab needs root (network namespaces): run it with sudo\n"
    )
