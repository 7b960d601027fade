"""Bringing the lab up and taking it down again."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyotp

from bastionctl.errors import LabError

from . import configs, system
from .info import HostInfo, LabInfo
from .spec import BASTION, DOMAIN, TARGETS, LabSpec

MARKER = ".bastionctl-lab"
REQUIRED = {
    "ip": "iproute2",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "mariadb": "mariadb-client",
    "useradd": "passwd",
    "setpriv": "util-linux",
}
PAM_MODULE_DIRS = (
    "/lib/x86_64-linux-gnu/security",
    "/usr/lib/x86_64-linux-gnu/security",
    "/lib/aarch64-linux-gnu/security",
    "/usr/lib/aarch64-linux-gnu/security",
    "/lib/security",
    "/usr/lib/security",
)


def check_prerequisites() -> None:
    if sys.platform != "linux":
        raise LabError("the lab needs Linux (network namespaces)")
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces): run it with sudo")
    missing = sorted({pkg for cmd, pkg in REQUIRED.items() if not _which(cmd)})
    if not any(Path(d, "pam_google_authenticator.so").exists() for d in PAM_MODULE_DIRS):
        missing.append("libpam-google-authenticator")
    if missing:
        raise LabError(f"the lab needs Debian packages: apt-get install {' '.join(missing)}")


def _which(cmd: str) -> str | None:
    return shutil.which(cmd, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


@dataclass(frozen=True)
class LabStatus:
    lines_: tuple[str, ...]
    healthy: bool

    def lines(self) -> list[str]:
        return list(self.lines_)


def status(spec: LabSpec) -> LabStatus:
    try:
        info = LabInfo.load(spec.root)
    except LabError as exc:
        leftovers = _our_namespaces(spec)
        extra = f"; leftover namespaces: {', '.join(leftovers)}" if leftovers else ""
        return LabStatus((f"lab {spec.name}: down ({exc.message}){extra}",), False)
    present = set(system.namespaces())
    lines = [f"lab {spec.name} under {info.root}:"]
    healthy = True
    for component, pid in sorted(info.pids.items()):
        up = system.alive(pid)
        healthy &= up
        lines.append(f"  {component:<28} {'up' if up else 'DOWN':<5} pid {pid}")
    for ns in (info.bastion_ns, *(h.ns for h in info.hosts.values())):
        if ns not in present:
            healthy = False
            lines.append(f"  namespace {ns} is missing")
    lines.append(
        f"  bastion {BASTION}: [{info.bastion_ipv6}]:22 and {info.bastion_ipv4}:22 "
        f"(reverse order on 2222)"
    )
    for host in info.hosts.values():
        kinds = ", ".join(f"{p} {k}" for p, k in sorted(host.services.items()))
        lines.append(f"  {host.alias} [{host.ipv6}] ({host.platform}): {kinds}")
    lines.insert(1, f"  state: {'up' if healthy else 'DEGRADED'}")
    return LabStatus(tuple(lines), healthy)


def up(spec: LabSpec) -> LabInfo:
    """Build the lab, or return it as it is when it is already fully up."""
    check_prerequisites()
    if (spec.root / "lab.json").exists() and status(spec).healthy:
        return LabInfo.load(spec.root)
    down(spec)
    try:
        return _build(spec)
    except BaseException:
        down(spec)
        raise


def down(spec: LabSpec) -> list[str]:
    """Remove everything the lab made; safe when nothing (or half of it) exists."""
    done: list[str] = []
    try:
        info: LabInfo | None = LabInfo.load(spec.root)
    except LabError:
        info = None
    if info is not None:
        for component, pid in sorted(info.pids.items()):
            if system.stop(pid):
                done.append(f"stopped {component} (pid {pid})")
    for ns in _our_namespaces(spec):
        for pid_text in system.run("ip", "netns", "pids", ns, check=False).split():
            if system.stop(int(pid_text)):
                done.append(f"stopped pid {pid_text} left in {ns}")
        system.run("ip", "netns", "del", ns, check=False)
        done.append(f"removed namespace {ns}")
    if Path(f"/sys/class/net/{spec.host_veth}").exists():
        system.run("ip", "link", "del", spec.host_veth, check=False)
        done.append(f"removed veth {spec.host_veth}")
    routes = system.run("ip", "-6", "route", "show", spec.private_prefix, check=False)
    if routes.strip():
        system.run("ip", "-6", "route", "del", "unreachable", spec.private_prefix, check=False)
        done.append(f"removed route {spec.private_prefix}")
    for user in (spec.op_user, spec.bulk_user):
        if _user_exists(user):
            system.run("userdel", user, check=False)
            done.append(f"removed user {user}")
    if spec.netns_etc.exists():
        shutil.rmtree(spec.netns_etc)
        done.append(f"removed {spec.netns_etc}")
    if (spec.root / MARKER).exists():
        shutil.rmtree(spec.root)
        done.append(f"removed {spec.root}")
    return done


def _our_namespaces(spec: LabSpec) -> list[str]:
    wanted = {spec.bastion_ns, *(spec.target_ns(t) for t in TARGETS)}
    return [ns for ns in system.namespaces() if ns in wanted]


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _check_root(root: Path) -> None:
    for parent in reversed(root.parents):
        if not parent.exists():
            break
        st = parent.stat()
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise LabError(
                f"lab directory {root} is below {parent}, which is not root-owned or is "
                "writable by others; sshd's StrictModes refuses keys there",
                "choose a directory such as /var/lib/bastionctl-lab/NAME",
            )
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    (root / MARKER).write_text("made by bastionctl lab up; removed by bastionctl lab down\n")


def _build(spec: LabSpec) -> LabInfo:
    started = time.monotonic()
    _check_root(spec.root)
    root = spec.root
    for sub in ("hosts", "client", "home", "logs", "run"):
        (root / sub).mkdir(mode=0o755, exist_ok=True)
    _network(spec)
    op_secret, bulk_secret = _users(spec)
    keys = _keys(spec)
    pids: dict[str, int] = {}
    _bastion(spec, pids)
    hosts: dict[str, HostInfo] = {}
    xrdp_real = False
    notes: list[str] = []
    for target in TARGETS:
        ns = spec.target_ns(target)
        log = root / "logs" / f"{target.alias}-sshd.log"
        host_dir = root / "hosts" / target.alias
        conf = host_dir / "sshd_config"
        conf.write_text(
            configs.target_sshd(
                spec, target.index, host_dir / "ssh_host_ed25519_key", host_dir / "authorized_keys"
            )
        )
        system.run("/usr/sbin/sshd", "-t", "-f", str(conf))
        pids[f"{target.alias} sshd"] = pid = system.spawn(
            ns, ["/usr/sbin/sshd", "-D", "-f", str(conf), "-E", str(log)], log
        )
        system.wait_listening(ns, {22}, pid, f"sshd of {target.alias}", log)
        services = dict(target.services)
        for port, kind in target.services.items():
            if kind == "mariadb":
                pids[f"{target.alias} mariadb"] = _mariadb(spec, ns, host_dir)
            elif kind == "xrdp":
                xrdp_pid, why = _xrdp(spec, ns, host_dir)
                if xrdp_pid:
                    pids[f"{target.alias} xrdp"] = xrdp_pid
                    xrdp_real = True
                else:
                    notes.append(f"xrdp did not run ({why}); RDP on {target.alias} is a stand-in")
                    services[port] = "rdp-standin"
                    pids[f"{target.alias} rdp-standin"] = _standin(spec, ns, port, "RDP stand-in")
            else:
                label = "RDP stand-in" if kind.startswith("rdp") else "SQL Server stand-in"
                pids[f"{target.alias} {kind}"] = _standin(spec, ns, port, label)
        hosts[target.alias] = HostInfo(
            alias=target.alias,
            ns=ns,
            ipv6=spec.private6(target.index),
            fqdn=f"{target.alias}.{DOMAIN}",
            platform=target.platform,
            sshd_log=log,
            services=services,
            config_services=target.config_services,
        )
    defaults = root / "client" / "my.cnf"
    info = LabInfo(
        root=root,
        name=spec.name,
        net_id=spec.net_id,
        bastion_ns=spec.bastion_ns,
        bastion_ipv6=spec.public6(2),
        bastion_ipv4=spec.public4(2),
        bastion_private_ipv6=spec.private6(1),
        bastion_sshd_log=root / "logs" / f"{BASTION}-sshd.log",
        op_user=spec.op_user,
        bulk_user=spec.bulk_user,
        op_secret_file=root / "home" / spec.op_user / ".google_authenticator",
        bulk_secret_file=root / "home" / spec.bulk_user / ".google_authenticator",
        known_hosts=root / "client" / "known_hosts",
        client_keys=keys,
        mysql_defaults_file=defaults,
        hosts=hosts,
        pids=pids,
        xrdp_real=xrdp_real,
        notes=[*notes, f"built in {time.monotonic() - started:.1f} s"],
    )
    del op_secret, bulk_secret
    info.save()
    return info


def _network(spec: LabSpec) -> None:
    run = system.run
    b = spec.bastion_ns
    run("ip", "netns", "add", b)
    for target in TARGETS:
        run("ip", "netns", "add", spec.target_ns(target))
    for ns in (b, *(spec.target_ns(t) for t in TARGETS)):
        run("ip", "-n", ns, "link", "set", "lo", "up")
    # Public side: host <-> bastion, IPv6 and IPv4.
    run("ip", "link", "add", spec.host_veth, "type", "veth", "peer", "name", "eth0", "netns", b)
    run("ip", "addr", "add", f"{spec.public6(1)}/64", "dev", spec.host_veth, "nodad")
    run("ip", "addr", "add", f"{spec.public4(1)}/24", "dev", spec.host_veth)
    run("ip", "link", "set", spec.host_veth, "up")
    run("ip", "-n", b, "addr", "add", f"{spec.public6(2)}/64", "dev", "eth0", "nodad")
    run("ip", "-n", b, "addr", "add", f"{spec.public4(2)}/24", "dev", "eth0")
    run("ip", "-n", b, "link", "set", "eth0", "up")
    # The bastion is not a router: the private subnet is reachable only through SSH.
    run("sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=0", ns=b)
    run("sysctl", "-q", "-w", "net.ipv4.ip_forward=0", ns=b)
    # Private side: a bridge in the bastion, one veth per private host, IPv6 only.
    run("ip", "-n", b, "link", "add", "br0", "type", "bridge")
    run("ip", "-n", b, "addr", "add", f"{spec.private6(1)}/64", "dev", "br0", "nodad")
    run("ip", "-n", b, "link", "set", "br0", "up")
    for target in TARGETS:
        ns, port = spec.target_ns(target), f"p{target.index}"
        run("ip", "-n", b, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "-n", b, "link", "set", port, "master", "br0", "up")
        run(
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            f"{spec.private6(target.index)}/64",
            "dev",
            "eth0",
            "nodad",
        )
        run("ip", "-n", ns, "link", "set", "eth0", "up")
    # The host has no way into the private subnet, and nothing for it leaves the machine.
    run("ip", "-6", "route", "add", "unreachable", spec.private_prefix)


def _users(spec: LabSpec) -> tuple[str, str]:
    secrets_out = []
    for user, defaults in ((spec.op_user, True), (spec.bulk_user, False)):
        home = spec.root / "home" / user
        if not _user_exists(user):
            system.run(
                "useradd",
                "--system",
                "--shell",
                "/bin/sh",
                "--home-dir",
                str(home),
                "--no-create-home",
                user,
            )
        # "*" rather than the default "!": OpenSSH treats "!" as locked when UsePAM is off.
        system.run("usermod", "-p", "*", user)
        entry = pwd.getpwnam(user)
        home.mkdir(mode=0o700, exist_ok=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        secret = pyotp.random_base32(32)
        path = home / ".google_authenticator"
        path.write_text(configs.totp_file(secret, defaults))
        os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(0o400)
        secrets_out.append(secret)
    return secrets_out[0], secrets_out[1]


def _keys(spec: LabSpec) -> dict[str, Path]:
    client: dict[str, Path] = {}
    known: list[str] = []
    for alias in (BASTION, *(t.alias for t in TARGETS)):
        host_dir = spec.root / "hosts" / alias
        host_dir.mkdir(mode=0o755, exist_ok=True)
        host_key = host_dir / "ssh_host_ed25519_key"
        system.run(
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            f"{alias} host",
            "-f",
            str(host_key),
        )
        key = spec.root / "client" / alias
        system.run(
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            f"lab operator@{alias}",
            "-f",
            str(key),
        )
        key.chmod(0o600)
        client[alias] = key
        keys_dir = host_dir / "authorized_keys"
        keys_dir.mkdir(mode=0o755, exist_ok=True)
        for user in (spec.op_user, spec.bulk_user):
            target = keys_dir / user
            target.write_text(key.with_suffix(".pub").read_text())
            target.chmod(0o644)
        public = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
        if alias == BASTION:
            names = [alias, f"{alias}.{DOMAIN}", spec.public6(2), spec.public4(2)]
            known.append(f"{','.join(names)} {public}")
            known.append(f"{','.join(f'[{n}]:2222' for n in names)} {public}")
        else:
            index = next(t.index for t in TARGETS if t.alias == alias)
            known.append(f"{alias},{alias}.{DOMAIN},{spec.private6(index)} {public}")
    (spec.root / "client" / "known_hosts").write_text("\n".join(known) + "\n")
    return client


def _bastion(spec: LabSpec, pids: dict[str, int]) -> None:
    host_dir = spec.root / "hosts" / BASTION
    # `ip netns exec` bind-mounts /etc/netns/NS/* over /etc/*: the bastion (and only it)
    # gets the lab's /etc/hosts and a PAM stack with google-authenticator.
    etc = spec.netns_etc
    (etc / "pam.d").mkdir(parents=True, exist_ok=True)
    (etc / "pam.d" / "sshd").write_text(configs.PAM_SERVICE)
    (etc / "hosts").write_text(configs.bastion_hosts_file(spec))
    conf = host_dir / "sshd_config"
    conf.write_text(
        configs.bastion_sshd(spec, host_dir / "ssh_host_ed25519_key", host_dir / "authorized_keys")
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    system.run("/usr/sbin/sshd", "-t", "-f", str(conf))
    log = spec.root / "logs" / f"{BASTION}-sshd.log"
    pids[f"{BASTION} sshd"] = pid = system.spawn(
        spec.bastion_ns, ["/usr/sbin/sshd", "-D", "-f", str(conf), "-E", str(log)], log
    )
    system.wait_listening(spec.bastion_ns, {22, 2222}, pid, f"sshd of {BASTION}", log)


def _mariadb(spec: LabSpec, ns: str, host_dir: Path) -> int:
    data = host_dir / "mysql"
    log = spec.root / "logs" / "server-02-mariadb.log"
    system.run(
        "mariadb-install-db",
        "--no-defaults",
        "--user=root",
        f"--datadir={data}",
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
    )
    sock = data / "mysqld.sock"
    pid = system.spawn(
        ns,
        [
            "mariadbd",
            "--no-defaults",
            "--user=root",
            f"--datadir={data}",
            f"--socket={sock}",
            f"--pid-file={data / 'mysqld.pid'}",
            "--bind-address=127.0.0.1",
            "--port=3306",
            "--skip-name-resolve",
            "--max-allowed-packet=256M",
            f"--log-error={log}",
        ],
        log,
    )
    system.wait_listening(ns, {3306}, pid, "MariaDB on server-02", log)
    # token_urlsafe's alphabet has no quote or backslash, so it is safe inside '...'.
    password = secrets.token_urlsafe(18)
    statements = [
        "CREATE DATABASE labdb",
        "CREATE TABLE labdb.greetings (id INT PRIMARY KEY, msg VARCHAR(100))",
        "INSERT INTO labdb.greetings VALUES (1, 'hello from server-02')",
    ]
    for client in ("127.0.0.1", "localhost"):
        statements.append("CREATE USER 'lab'@'" + client + "' IDENTIFIED BY '" + password + "'")
        statements.append("GRANT ALL ON labdb.* TO 'lab'@'" + client + "'")
    sql = ";\n".join(statements) + ";\n"
    result = subprocess.run(
        ["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root"],
        input=sql,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise LabError(
            f"setting up MariaDB on server-02 failed: {result.stderr.strip()}", f"see {log}"
        )
    defaults = spec.root / "client" / "my.cnf"
    defaults.write_text(f"[client]\nuser=lab\npassword={password}\n")
    defaults.chmod(0o600)
    return pid


def _xrdp(spec: LabSpec, ns: str, host_dir: Path) -> tuple[int | None, str]:
    if not _which("xrdp"):
        return None, "xrdp is not installed"
    cert, key = host_dir / "xrdp-cert.pem", host_dir / "xrdp-key.pem"
    system.run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=server-03.lab.bastionctl.test",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    )
    log = spec.root / "logs" / "server-03-xrdp.log"
    ini = host_dir / "xrdp.ini"
    ini.write_text(configs.xrdp_ini(cert, key, log))
    for path, mode in ((Path("/run/xrdp"), 0o2775), (Path("/run/xrdp/sockdir"), 0o3777)):
        path.mkdir(exist_ok=True)
        path.chmod(mode)
    pid = system.spawn(ns, ["xrdp", "--nodaemon", "--config", str(ini)], log)
    try:
        system.wait_listening(ns, {3389}, pid, "xrdp on server-03", log, timeout=10)
    except LabError as exc:
        system.stop(pid)
        return None, exc.message
    return pid, ""


def _standin(spec: LabSpec, ns: str, port: int, name: str) -> int:
    log = spec.root / "logs" / f"{ns}-{port}-standin.log"
    module = f"{__package__}.standin"
    pid = system.spawn(
        ns,
        [sys.executable, "-m", module, "--name", name, "--bind", "127.0.0.1", "--port", str(port)],
        log,
    )
    system.wait_listening(ns, {port}, pid, f"{name} in {ns}", log)
    return pid
