"""Bringing the lab up and taking it down again."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bastionctl.errors import LabError

from . import accounts, configs, daemons, network, system
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
    "openssl": "openssl",
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
    missing = sorted({pkg for cmd, pkg in REQUIRED.items() if not system.which(cmd)})
    if not any(Path(d, "pam_google_authenticator.so").exists() for d in PAM_MODULE_DIRS):
        missing.append("libpam-google-authenticator")
    if missing:
        raise LabError(f"the lab needs Debian packages: apt-get install {' '.join(missing)}")


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
    # What an interrupted `up` started before it could write lab.json.
    for pid in system.journal_pids(spec.journal):
        if system.stop(pid):
            done.append(f"stopped pid {pid} (started by an earlier lab up)")
    for ns in _our_namespaces(spec):
        for pid_text in system.run("ip", "netns", "pids", ns, check=False).split():
            if system.stop(int(pid_text)):
                done.append(f"stopped pid {pid_text} left in {ns}")
        system.run("ip", "netns", "del", ns, check=False)
        done.append(f"removed namespace {ns}")
    if Path(f"/sys/class/net/{spec.host_veth}").exists():
        system.run("ip", "link", "del", spec.host_veth, check=False)
        done.append(f"removed veth {spec.host_veth}")
    for family, prefix, extra in (("-6", spec.fence6, ()), ("-4", spec.fence4, ("metric", "4242"))):
        shown = system.run(
            "ip", family, "route", "show", "type", "unreachable", prefix, check=False
        )
        if shown.strip():
            system.run("ip", family, "route", "del", "unreachable", prefix, *extra, check=False)
            done.append(f"removed fence route {prefix}")
    for user in (spec.op_user, spec.bulk_user):
        # Only what an older `lab up` added to the host; today's accounts live in the lab.
        if accounts.legacy_host_user(spec, user):
            system.run("userdel", user, check=False)
            done.append(f"removed host user {user} (left by an older bastionctl)")
    for etc in accounts.netns_etc_dirs(spec):
        if etc.exists():
            shutil.rmtree(etc)
            done.append(f"removed {etc}")
    with contextlib.suppress(OSError):
        Path("/etc/netns").rmdir()  # only when no other namespace has files there
    # An empty root is one an interrupted `up` made but had not marked yet.
    if (spec.root / MARKER).exists() or (spec.root.is_dir() and not any(spec.root.iterdir())):
        shutil.rmtree(spec.root)
        done.append(f"removed {spec.root}")
    return done


def _our_namespaces(spec: LabSpec) -> list[str]:
    wanted = {spec.bastion_ns, *(spec.target_ns(t) for t in TARGETS)}
    return [ns for ns in system.namespaces() if ns in wanted]


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
    network.create_network(spec)
    accounts.create_users(spec)
    keys = accounts.create_keys(spec)
    pids: dict[str, int] = {}
    daemons.start_bastion(spec, pids)
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
            ns, ["/usr/sbin/sshd", "-D", "-f", str(conf), "-E", str(log)], log, spec.journal
        )
        system.wait_listening(ns, {22}, pid, f"sshd of {target.alias}", log)
        services = dict(target.services)
        for port, kind in target.services.items():
            if kind == "mariadb":
                pids[f"{target.alias} mariadb"] = daemons.start_mariadb(spec, ns, host_dir)
            elif kind == "xrdp":
                xrdp_pid, why = daemons.start_xrdp(spec, ns, host_dir)
                if xrdp_pid:
                    pids[f"{target.alias} xrdp"] = xrdp_pid
                    xrdp_real = True
                else:
                    notes.append(f"xrdp did not run ({why}); RDP on {target.alias} is a stand-in")
                    services[port] = "rdp-standin"
                    pids[f"{target.alias} rdp-standin"] = daemons.start_standin(
                        spec, ns, port, "RDP stand-in"
                    )
            elif kind.startswith("bench-"):
                mode = kind.removeprefix("bench-")
                pids[f"{target.alias} {kind}"] = daemons.start_standin(
                    spec, ns, port, f"benchmark {mode}", mode
                )
            else:
                label = "RDP stand-in" if kind.startswith("rdp") else "SQL Server stand-in"
                pids[f"{target.alias} {kind}"] = daemons.start_standin(spec, ns, port, label)
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
    info.save()
    return info
