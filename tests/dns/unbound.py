"""A real unbound on loopback, started and stopped (by pid) by the tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ZONE = "lab.bastionctl.test"
ZONE_FILE = f"""\
$ORIGIN {ZONE}.
$TTL 60
@         IN SOA ns hostmaster 1 3600 600 86400 60
@         IN NS  ns
ns        IN A   127.0.0.1
server-01 IN AAAA fd00:bc1:2:1::2
server-01 IN A    10.213.2.2
server-02 IN AAAA fd00:bc1:2:2::2
server-03 IN AAAA fd00:bc1:2:2::33
server-04 IN A    192.0.2.4
legacy    IN A    192.0.2.10
dual      IN AAAA 2001:db8::10
dual      IN A    192.0.2.11
loopback  IN AAAA ::1
loopback  IN A    127.0.0.1
"""
IPV4ONLY_FILE = """\
$ORIGIN ipv4only.arpa.
$TTL 60
@ IN SOA ns hostmaster 1 3600 600 86400 60
@ IN NS  ns
ns IN A 127.0.0.1
@ IN A 192.0.0.170
@ IN A 192.0.0.171
"""


@dataclass
class Unbound:
    port: int
    pid: int
    log: Path

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"


# Starts tried: the port chosen may still be taken before unbound binds it.
ATTEMPTS = 3


def free_port() -> int:
    """A port free on 127.0.0.1 for UDP and TCP: unbound listens on both, and exits when the
    TCP one is taken (by the local end of a connection, of which the lab tests make many)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def start(directory: Path, dns64_prefix: str | None) -> Unbound:
    if shutil.which("unbound") is None and not Path("/usr/sbin/unbound").exists():
        if os.environ.get("CI"):
            pytest.fail("unbound is missing; scripts/setup-env installs it")
        pytest.skip("unbound is not installed (apt-get install unbound)")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "lab.zone").write_text(ZONE_FILE)
    (directory / "ipv4only.zone").write_text(IPV4ONLY_FILE)
    log = directory / "unbound.log"
    errors = directory / "unbound.stderr"  # what it says before its log is open (a bind)
    said: list[str] = []
    for _attempt in range(ATTEMPTS):
        port = free_port()
        conf = directory / "unbound.conf"
        conf.write_text(_config(directory, port, dns64_prefix))
        check = subprocess.run(["unbound-checkconf", str(conf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        with errors.open("wb") as stderr:
            process = subprocess.Popen(
                ["unbound", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        server = Unbound(port, process.pid, log)
        deadline = time.monotonic() + 10
        while process.poll() is None:
            if _udp_listening(port):
                return server
            if time.monotonic() > deadline:
                stop(server)
                raise AssertionError("unbound did not start listening")
            time.sleep(0.05)
        logged = log.read_text().strip() if log.exists() else ""
        said.append(" ".join(filter(None, (errors.read_text().strip(), logged))) or "no word")
    raise AssertionError(f"unbound exited {ATTEMPTS} times: " + " | ".join(said))


def _config(directory: Path, port: int, dns64_prefix: str | None) -> str:
    # dns64 synthesises only for data that comes "from upstream": auth-zones must be
    # for-upstream and not for-downstream, or they answer before dns64 sees them.
    downstream = "no" if dns64_prefix else "yes"
    modules = "dns64 iterator" if dns64_prefix else "iterator"
    lines = [
        "server:",
        f"  interface: 127.0.0.1@{port}",
        f"  port: {port}",
        "  do-daemonize: no",
        "  use-syslog: no",
        f'  logfile: "{directory / "unbound.log"}"',
        '  chroot: ""',
        '  username: ""',
        f'  directory: "{directory}"',
        '  pidfile: ""',
        "  do-ip6: no",
        "  access-control: 127.0.0.0/8 allow",
        f'  module-config: "{modules}"',
        "  do-not-query-localhost: no",
        "  qname-minimisation: no",
        '  local-zone: "test." nodefault',
        f'  local-zone: "{ZONE}." nodefault',
        '  local-zone: "arpa." nodefault',
    ]
    if dns64_prefix:
        lines.append(f"  dns64-prefix: {dns64_prefix}")
    for name, zone_file in ((ZONE, "lab.zone"), ("ipv4only.arpa", "ipv4only.zone")):
        lines += [
            "auth-zone:",
            f'  name: "{name}."',
            f'  zonefile: "{directory / zone_file}"',
            "  for-upstream: yes",
            f"  for-downstream: {downstream}",
            "  fallback-enabled: no",
        ]
    return "\n".join(lines) + "\n"


def _udp_listening(port: int) -> bool:
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        if int(line.split()[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False


def stop(server: Unbound) -> None:
    try:
        os.kill(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.waitpid(server.pid, os.WNOHANG)
        except ChildProcessError:
            return
        if not Path(f"/proc/{server.pid}").exists():
            return
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)
