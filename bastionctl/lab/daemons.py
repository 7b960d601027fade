"""Starting the lab's servers inside their namespaces: sshd, MariaDB, xrdp, stand-ins."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from bastionctl.errors import LabError

from . import configs, system
from .info import LabInfo
from .spec import BASTION, LabSpec, pid_journal


def start_bastion(spec: LabSpec, pids: dict[str, int]) -> None:
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
        spec.bastion_ns,
        ["/usr/sbin/sshd", "-D", "-f", str(conf), "-E", str(log)],
        log,
        spec.journal,
    )
    system.wait_listening(spec.bastion_ns, {22, 2222}, pid, f"sshd of {BASTION}", log)


def start_mariadb(spec: LabSpec, ns: str, host_dir: Path) -> int:
    data = host_dir / "mysql"
    log = spec.root / "logs" / "server-02-mariadb.log"
    # In the namespace, so that `lab down` after an interrupted `up` finds it there.
    system.run(
        "mariadb-install-db",
        "--no-defaults",
        "--user=root",
        f"--datadir={data}",
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
        ns=ns,
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
        spec.journal,
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


def start_xrdp(spec: LabSpec, ns: str, host_dir: Path) -> tuple[int | None, str]:
    if not system.which("xrdp"):
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
    pid = system.spawn(ns, ["xrdp", "--nodaemon", "--config", str(ini)], log, spec.journal)
    try:
        system.wait_listening(ns, {3389}, pid, "xrdp on server-03", log, timeout=10)
    except LabError as exc:
        system.stop(pid)
        return None, exc.message
    return pid, ""


def start_standin(spec: LabSpec, ns: str, port: int, name: str, mode: str = "echo") -> int:
    log = spec.root / "logs" / f"{ns}-{port}-standin.log"
    module = f"{__package__}.standin"
    argv = [sys.executable, "-m", module, "--name", name, "--bind", "127.0.0.1"]
    pid = system.spawn(ns, [*argv, "--port", str(port), "--mode", mode], log, spec.journal)
    system.wait_listening(ns, {port}, pid, f"{name} in {ns}", log)
    return pid


def _sshd_place(info: LabInfo, alias: str) -> tuple[str, Path, set[int]]:
    if alias == BASTION:
        return info.bastion_ns, info.bastion_sshd_log, {22, 2222}
    host = info.hosts[alias]
    return host.ns, host.sshd_log, {22}


def stop_sshd(info: LabInfo, alias: str) -> None:
    """Stop a lab sshd and every session under it; for fault tests."""
    old = info.pids[f"{alias} sshd"]
    sessions = system.children(old)
    for pid in [*sessions, *(g for p in sessions for g in system.children(p)), old]:
        system.stop(pid)


def start_sshd(info: LabInfo, alias: str) -> int:
    """Start a lab sshd again with its own config; records the new pid in lab.json."""
    ns, log, ports = _sshd_place(info, alias)
    conf = info.root / "hosts" / alias / "sshd_config"
    argv = ["/usr/sbin/sshd", "-D", "-f", str(conf), "-E", str(log)]
    pid = system.spawn(ns, argv, log, pid_journal(info.root))
    system.wait_listening(ns, ports, pid, f"sshd of {alias}", log)
    info.pids[f"{alias} sshd"] = pid
    info.save()
    return pid


def restart_target_sshd(info: LabInfo, alias: str) -> int:
    stop_sshd(info, alias)
    return start_sshd(info, alias)
