"""bastionctl against OpenSSH through the lab, interleaved in one run.

    python -m bench [--rounds N] [--size-mb M] [--conn-rounds K]    (root: it brings up its own lab)
    python -m bench --connections-only [--conn-rounds K]            (only the alternated rows)

The baseline is what most people run, a plain `ssh -J bastion target -L ...` per tunnel; each
figure has a second row against OpenSSH with ControlMaster (one bastion login shared, as
bastionctl shares one), and a row for bastionctl's plain data path (BASTIONCTL_DATA_PATH=plain,
the public-API fallback for a paramiko it does not know) against the same baseline.
Prints medians with the ratios and writes bench/results/*.json.

The rows for new connections and the round trip (bench.connections) alternate the tools
`--conn-rounds` times (bastionctl, OpenSSH, ..., order reversed every other round) over
tunnels opened once, and give each ratio as the median of the per-round ratios with their
range, with the load average at each round; the tunnel process's RSS and open fds after
20,000 connections are set against their values after the first 100.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import hashlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bastionctl as package
from bastionctl.lab import LabInfo, LabSpec, down, render_config, up
from bastionctl.lab.standin import pattern
from bench import connections, offline
from bench import tui as tui_bench

LAB = LabSpec(name="bclb", net_id=4, root=Path("/var/lib/bastionctl-lab/bclb"))
SINK, SOURCE, ECHO = 9000, 9001, 1433
MB = 1_000_000
CHUNK = 1 << 20


# ---------------------------------------------------------------- clients


def upload(port: int, size: int) -> float:
    """Seconds to push `size` bytes into the sink; its sha256 answer is checked."""
    data = pattern(size)
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        view = memoryview(data)
        for offset in range(0, size, CHUNK):
            conn.sendall(view[offset : offset + CHUNK])
        conn.shutdown(socket.SHUT_WR)
        answer = conn.makefile("rb").readline().strip().decode()
    elapsed = time.perf_counter() - started
    if answer != hashlib.sha256(data).hexdigest():
        raise SystemExit(f"upload through port {port}: sha256 mismatch")
    return elapsed


def download(port: int, size: int) -> float:
    expected = hashlib.sha256(pattern(size)).hexdigest()
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    received = 0
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as conn:
        conn.sendall(f"{size}\n".encode())
        while count := conn.recv_into(buffer):
            digest.update(view[:count])
            received += count
    elapsed = time.perf_counter() - started
    if received != size or digest.hexdigest() != expected:
        raise SystemExit(f"download through port {port}: {received} bytes, sha256 mismatch")
    return elapsed


def round_trips(port: int, count: int) -> list[float]:
    payload = b"x" * 100
    times = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            started = time.perf_counter()
            conn.sendall(payload)
            got = 0
            while got < len(payload):
                got += len(conn.recv(len(payload) - got))
            times.append(time.perf_counter() - started)
    return times


def parallel_download(port: int, streams: int, size: int) -> float:
    """Aggregate MB/s of `streams` concurrent downloads."""
    threads = [threading.Thread(target=download, args=(port, size)) for _ in range(streams)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return streams * size / MB / (time.perf_counter() - started)


def listening(port: int) -> bool:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                return True
    return False


def wait_listening(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not listening(port):
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing listens on {port} after {timeout} s")
        time.sleep(0.005)


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def descendants(pid: int) -> list[int]:
    found, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except OSError:
                    continue
                if ppid == parent:
                    found.append(int(entry.name))
                    frontier.append(int(entry.name))
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------- the two tools


@dataclass
class Tool:
    name: str
    home: Path
    env: dict[str, str]
    ports: dict[int, int] = field(default_factory=dict)  # remote port -> local port

    def client_pids(self) -> list[int]:
        raise NotImplementedError

    def open_all(self) -> float:
        """Open sink, source and echo tunnels; returns cold setup seconds to first echo."""
        raise NotImplementedError

    def second_tunnel(self) -> float:
        raise NotImplementedError

    def foreground_cold(self) -> float:
        """Seconds from starting one tunnel in the foreground, logged out, to its first echo;
        the tunnel is closed again (and its login too)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Bastionctl(Tool):
    def __init__(
        self, lab: LabInfo, home: Path, env: dict[str, str], data_path: str = "fast"
    ) -> None:
        # Each variant has its own runtime directory, so its own agent with its own data path.
        home = home / f"bastionctl-{data_path}"
        env = {**env, "BASTIONCTL_DATA_PATH": data_path}
        for var, sub in (("XDG_RUNTIME_DIR", "run"), ("XDG_STATE_HOME", "state")):
            (home / sub).mkdir(mode=0o700, parents=True)
            env[var] = str(home / sub)
        name = "bastionctl" if data_path == "fast" else f"bastionctl {data_path} path"
        super().__init__(name, home, env)
        self.config = home / "bastionctl.toml"
        self.config.write_text(render_config(lab, bulk=True))
        self.run("otp", "set", "server-01", stdin=lab.read_secret(bulk=True))

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "bastionctl", "--config", str(self.config), *args]

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        if result.returncode != 0:
            raise SystemExit(f"bastionctl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def detach(self, remote: int) -> int:
        local = free_port()
        self.run("tunnel", "port", "server-04", str(remote), "--local-port", str(local), "--detach")
        return local

    def open_all(self) -> float:
        started = time.perf_counter()
        self.ports[ECHO] = self.detach(ECHO)
        round_trips(self.ports[ECHO], 1)
        cold = time.perf_counter() - started
        for remote in (SINK, SOURCE):
            self.ports[remote] = self.detach(remote)
        return cold

    def second_tunnel(self) -> float:
        started = time.perf_counter()
        port = self.detach(ECHO)
        round_trips(port, 1)
        return time.perf_counter() - started

    def foreground_cold(self) -> float:
        # `bastionctl tunnel port ...` as a user types it: the command starts the agent, asks it
        # for the tunnel and stays attached until it is ended (here by SIGTERM, as a terminal
        # hang-up or `kill` would). Its port is bound before the login; the echo waits for it.
        port = free_port()
        with tempfile.TemporaryFile() as stderr:
            started = time.perf_counter()
            process = subprocess.Popen(
                self.command("tunnel", "port", "server-04", str(ECHO), "--local-port", str(port)),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
            try:
                wait_listening(port)
                round_trips(port, 1)
                elapsed = time.perf_counter() - started
            finally:
                code = end(process, grace=30)
            if code != 0:
                stderr.seek(0)
                said = stderr.read().decode(errors="replace").strip()
                raise SystemExit(f"foreground tunnel ended with {code}: {said[-500:]}")
        self.close()
        return elapsed

    def agent_pid(self) -> int:
        return int((self.home / "run" / "bastionctl" / "tunnels" / "agent.pid").read_text())

    def client_pids(self) -> list[int]:
        return [self.agent_pid()]

    def close(self) -> None:
        # `logout`: the agent keeps a login for `persist` after its last tunnel; the next
        # round's cold setup must log in again.
        try:
            pid = self.agent_pid()
        except (OSError, ValueError):
            pid = None
        for command in (["tunnel", "stop", "--all"], ["logout"]):
            subprocess.run(
                [sys.executable, "-m", "bastionctl", *command],
                env=self.env,
                capture_output=True,
                timeout=60,
            )
        if pid is not None:
            stop_by_pid(pid)


def end(process: subprocess.Popen[bytes], grace: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after `grace` seconds; the exit status."""
    process.terminate()
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=10)


def stop_by_pid(pid: int, grace: float = 5.0) -> None:
    """The agent leaves once idle; one that does not is stopped by its pid (SIGTERM, then
    SIGKILL), so no bench run leaves a process behind."""
    deadline = time.monotonic() + grace
    sent = False
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if not sent and time.monotonic() > deadline - grace / 2:
            os.kill(pid, signal.SIGTERM)
            sent = True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class OpenSSH(Tool):
    """`ssh -J`-style ProxyJump and `-L`; with `master`, ControlMaster on the bastion."""

    def __init__(self, lab: LabInfo, home: Path, env: dict[str, str], master: bool) -> None:
        askpass = home / "askpass"
        # The bench's TOTP answer for plain ssh, computed from the lab's own secret file.
        askpass.write_text(
            f"#!{sys.executable}\nimport pyotp\n"
            f"print(pyotp.TOTP(open({str(lab.bulk_secret_file)!r}).read().split()[0]).now())\n"
        )
        askpass.chmod(0o700)
        env = {**env, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
        super().__init__("OpenSSH ControlMaster" if master else "OpenSSH", home, env)
        self.master = master
        self.config = home / ("ssh_config_cm" if master else "ssh_config")
        sharing = (
            f"  ControlMaster auto\n  ControlPath {home}/cm-%C\n  ControlPersist 300\n"
            if master
            else ""
        )
        common = (
            f"  User {lab.bulk_user}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {lab.known_hosts}\n  StrictHostKeyChecking yes\n"
        )
        self.config.write_text(
            f"Host bastion\n  HostName {lab.bastion_ipv6}\n"
            f"  IdentityFile {lab.client_keys['server-01']}\n{common}{sharing}"
            f"Host target\n  HostName {lab.hosts['server-04'].ipv6}\n"
            f"  IdentityFile {lab.client_keys['server-04']}\n{common}  ProxyJump bastion\n"
        )
        self.processes: list[subprocess.Popen[bytes]] = []

    def forward(self, remotes: list[int]) -> subprocess.Popen[bytes]:
        args = ["ssh", "-F", str(self.config), "-N", "-o", "ExitOnForwardFailure yes"]
        for remote in remotes:
            self.ports[remote] = free_port()
            args += ["-L", f"127.0.0.1:{self.ports[remote]}:localhost:{remote}"]
        process = subprocess.Popen(
            [*args, "target"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def open_all(self) -> float:
        started = time.perf_counter()
        self.forward([ECHO, SINK, SOURCE])
        wait_listening(self.ports[ECHO])
        round_trips(self.ports[ECHO], 1)
        return time.perf_counter() - started

    def second_tunnel(self) -> float:
        started = time.perf_counter()
        self.forward([ECHO])
        wait_listening(self.ports[ECHO])
        round_trips(self.ports[ECHO], 1)
        return time.perf_counter() - started

    def foreground_cold(self) -> float:
        elapsed = self.second_tunnel()  # logged out, one `ssh -J -L` is the same as a second
        self.close()
        return elapsed

    def master_pid(self) -> int | None:
        if not self.master:
            return None
        check = subprocess.run(
            ["ssh", "-F", str(self.config), "-O", "check", "bastion"],
            capture_output=True,
            text=True,
            env=self.env,
        )
        digits = "".join(c for c in check.stderr.split("pid=")[-1] if c.isdigit())
        return int(digits) if "pid=" in check.stderr and digits else None

    def client_pids(self) -> list[int]:
        pids = [pid for p in self.processes for pid in descendants(p.pid)]
        master = self.master_pid()
        return pids + ([master] if master else [])

    def close(self) -> None:
        for process in self.processes:
            end(process)
        self.processes.clear()
        if self.master:
            subprocess.run(
                ["ssh", "-F", str(self.config), "-O", "exit", "bastion"],
                capture_output=True,
                env=self.env,
            )


# ---------------------------------------------------------------- the run


@contextmanager
def bench_home() -> Iterator[tuple[Path, dict[str, str]]]:
    with tempfile.TemporaryDirectory(prefix="bastionctl-bench-") as tmp:
        home = Path(tmp)
        env = dict(os.environ)
        for var, sub in (
            ("XDG_CONFIG_HOME", "config"),
            ("XDG_STATE_HOME", "state"),
            ("XDG_CACHE_HOME", "cache"),
            ("XDG_DATA_HOME", "data"),
            ("XDG_RUNTIME_DIR", "run"),
        ):
            (home / sub).mkdir(mode=0o700)
            env[var] = str(home / sub)
        env["PYTHON_KEYRING_BACKEND"] = "keyrings.alt.file.PlaintextKeyring"
        yield home, env


def median(values: list[float]) -> float:
    return statistics.median(values)


def measure(tool: Tool, size: int, results: dict[str, list[float]]) -> None:
    def add(key: str, value: float) -> None:
        results.setdefault(f"{tool.name}:{key}", []).append(value)

    add("cold setup s", tool.open_all())
    add("second tunnel s", tool.second_tunnel())
    cpu_before = cpu_seconds(tool.client_pids())
    add("upload MB/s", size / MB / upload(tool.ports[SINK], size))
    add("download MB/s", size / MB / download(tool.ports[SOURCE], size))
    cpu = cpu_seconds(tool.client_pids()) - cpu_before
    add("client CPU s/GB", cpu / (2 * size / 1e9))
    add("8 streams MB/s", parallel_download(tool.ports[SOURCE], 8, size // 8))
    tool.close()
    add("cold setup, foreground s", tool.foreground_cold())


def cli_timings(env: dict[str, str], results: dict[str, list[float]]) -> None:
    for key, args in (("--help ms", ["--help"]), ("tunnel list ms", ["tunnel", "list"])):
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "bastionctl", *args],
                env=env,
                capture_output=True,
                check=True,
            )
            results.setdefault(f"bastionctl:{key}", []).append(
                (time.perf_counter() - started) * 1000
            )


# Alternated rows: figure, higher is better, target. Each tool's value per round.
ALTERNATED = (
    ("1 at a time: conns/s", True, ">= 1.0x"),
    ("1 at a time: first byte p50 ms", False, ""),
    ("1 at a time: first byte p99 ms", False, ""),
    ("20 at a time: conns/s", True, ">= 0.8x"),
    ("20 at a time: first byte p50 ms", False, ""),
    ("20 at a time: first byte p99 ms", False, ""),
    ("RTT p50 us", False, "<= 1.1x"),
    ("RTT p99 us", False, ""),
)


def alternate(
    tools: list[Tool], args: argparse.Namespace, results: dict[str, list[float]]
) -> list[float]:
    """The alternated rows for every tool, over tunnels opened once; the load at each round."""
    loads = []
    for tool in tools:
        tool.open_all()
    try:
        for round_number in range(args.conn_rounds):
            loads.append(os.getloadavg()[0])
            for tool in tools if round_number % 2 == 0 else tools[::-1]:
                print(
                    f"connections {round_number + 1}/{args.conn_rounds}: {tool.name} "
                    f"(load {loads[-1]:.2f})",
                    file=sys.stderr,
                )
                port = tool.ports[ECHO]
                figures = []
                for total, concurrency in ((args.sequential, 1), (args.concurrent, 20)):
                    run = connections.burst(port, total, concurrency)
                    figures += [
                        run.per_second(),
                        run.percentile(0.5) * 1e3,
                        run.percentile(0.99) * 1e3,
                    ]
                times = sorted(round_trips(port, args.rtts))
                figures += [times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6]
                for (figure, _higher, _target), value in zip(ALTERNATED, figures, strict=True):
                    results.setdefault(f"{tool.name}:{figure}", []).append(value)
    finally:
        for tool in tools:
            tool.close()
    return loads


def churn(tool: Bastionctl, total: int) -> dict[str, float]:
    """RSS and open fds of the tunnel process after the first 100 connections and after `total`."""
    port = tool.detach(ECHO)
    pid = tool.agent_pid()
    connections.burst(port, 100, 20)
    idle = connections.settled_fds(pid, 0, patience=1.0)
    first = connections.rss_mb(pid)
    connections.burst(port, total - 100, 20)
    time.sleep(1.0)
    figures = {
        "RSS MB after 100 conns": first,
        f"RSS MB after {total} conns": connections.rss_mb(pid),
        "open fds after 100 conns": float(idle),
        f"open fds after {total} conns": float(connections.settled_fds(pid, idle)),
    }
    tool.close()
    return figures


def rss_with_tunnels(tool: Bastionctl, count: int) -> float:
    for _ in range(count):
        tool.detach(ECHO)
    status = Path(f"/proc/{tool.agent_pid()}/status").read_text()
    peak_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    tool.close()
    return peak_kb / 1024


ROWS = (  # figure, higher is better, target (ratio or absolute)
    ("upload MB/s", True, ">= 1.0x"),
    ("download MB/s", True, ">= 1.0x"),
    ("8 streams MB/s", True, ""),
    ("cold setup s", False, "<= 1.0x"),
    ("cold setup, foreground s", False, "<= 1.0x"),
    ("second tunnel s", False, "<= 0.3 s"),
    ("client CPU s/GB", False, ""),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rtts", type=int, default=1000)
    parser.add_argument(
        "--conn-rounds", type=int, default=5, help="alternations for connections and RTT"
    )
    parser.add_argument("--sequential", type=int, default=1000, help="connections, 1 at a time")
    parser.add_argument("--concurrent", type=int, default=5000, help="connections, 20 at a time")
    parser.add_argument(
        "--churn", type=int, default=20_000, help="connections before RSS/fds (0: skip)"
    )
    parser.add_argument(
        "--connections-only", action="store_true", help="only the alternated and churn rows"
    )
    parser.add_argument("--count", type=int, default=10_000, help="hosts for the offline rows")
    parser.add_argument("--tui-hosts", type=int, default=5000, help="hosts for the TUI rows")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmark brings up its own lab: run it as root")
    # The figures are of an installed tool, its modules byte-compiled as pip does on install:
    # a checkout run with PYTHONDONTWRITEBYTECODE would compile every module in every process.
    compileall.compile_dir(Path(package.__file__).parent, quiet=1)
    size = args.size_mb * MB
    bulk = not args.connections_only
    results: dict[str, list[float]] = {}
    down(LAB)
    lab = up(LAB)
    try:
        with bench_home() as (home, env):
            tools: list[Tool] = [
                Bastionctl(lab, home, env),
                OpenSSH(lab, home, env, master=False),
                OpenSSH(lab, home, env, master=True),
                Bastionctl(lab, home, env, data_path="plain"),
            ]
            bastionctl = tools[0]
            assert isinstance(bastionctl, Bastionctl)
            for round_number in range(args.rounds if bulk else 0):
                # Interleaved, alternating who goes first, so drift hits both alike.
                for tool in tools if round_number % 2 == 0 else tools[::-1]:
                    print(f"round {round_number + 1}/{args.rounds}: {tool.name}", file=sys.stderr)
                    measure(tool, size, results)
            loads = alternate(tools, args, results)
            churned = churn(bastionctl, args.churn) if args.churn else {}
            if bulk:
                cli_timings(env, results)
                results["bastionctl:peak RSS MB, 20 tunnels"] = [rss_with_tunnels(bastionctl, 20)]
    finally:
        down(LAB)
    offline_figures: dict[str, float] = {}
    if bulk:
        offline_figures = offline.run(args.count)
        offline_figures |= {
            f"TUI {args.tui_hosts} hosts {name}": value
            for name, value in tui_bench.run(args.tui_hosts).items()
        }
    for figure, seconds in {**churned, **offline_figures}.items():
        results[f"bastionctl:{figure}"] = [seconds]
    report(results, args, list(churned) + list(offline_figures), loads)


def target_of(figure: str) -> str:
    found = offline.target_of(figure) or tui_bench.target_of(figure)
    if found:
        return found
    if figure.startswith("RSS MB after") and "after 100 " not in figure:
        return "<= +20 MB"
    if figure.startswith("open fds after") and "after 100 " not in figure:
        return "= after 100"
    return ""


def report_alternated(results: dict[str, list[float]], loads: list[float]) -> list[dict[str, Any]]:
    """Medians, and the median and range of the per-round ratios (same round, same load)."""
    table: list[dict[str, Any]] = []
    if not loads:
        return table
    print(
        f"alternated {len(loads)} times, load average {min(loads):.2f}-{max(loads):.2f}; "
        "ratio: median of the rounds' ratios [range]"
    )
    for figure, _higher, target in ALTERNATED:
        rows = (("", "bastionctl", "OpenSSH", target), *((*row, "") for row in SECOND_ROWS))
        for label, ours_name, theirs_name, row_target in rows:
            ours_all = results[f"{ours_name}:{figure}"]
            theirs_all = results[f"{theirs_name}:{figure}"]
            ratios = sorted(a / b for a, b in zip(ours_all, theirs_all, strict=True) if b)
            ratio = median(ratios)
            shown = label or figure
            spread = f"[{ratios[0]:.2f}-{ratios[-1]:.2f}]"
            print(
                f"{shown:<32}{median(ours_all):>10.4g}{median(theirs_all):>10.4g}"
                f"{ratio:>7.2f}x {spread:<13} {row_target}"
            )
            table.append(
                {
                    "figure": f"{figure}{label}" if label else figure,
                    "bastionctl": median(ours_all),
                    "openssh": median(theirs_all),
                    "against": theirs_name,
                    "measured": ours_name,
                    "ratio": ratio,
                    "ratio_range": [ratios[0], ratios[-1]],
                    "target": row_target,
                }
            )
    return table


# Below each figure: (label, ours, theirs), both tool names as measured.
SECOND_ROWS = (
    ("  vs ControlMaster", "bastionctl", "OpenSSH ControlMaster"),
    ("  plain data path", "bastionctl plain path", "OpenSSH"),
)


def report(
    results: dict[str, list[float]],
    args: argparse.Namespace,
    single_figures: list[str],
    loads: list[float],
) -> None:
    table: list[dict[str, Any]] = []
    print(f"{'figure':<26}{'bastionctl':>12}{'OpenSSH':>12}{'ratio':>8}  target")
    print(f"{'':<26}{'':>12}{'(ssh -J -L)':>12}")
    for figure, _higher, target in ROWS if f"OpenSSH:{ROWS[0][0]}" in results else ():
        rows = (("", "bastionctl", "OpenSSH", target), *((*row, "") for row in SECOND_ROWS))
        for label, ours_name, theirs_name, row_target in rows:
            ours = median(results[f"{ours_name}:{figure}"])
            theirs = median(results[f"{theirs_name}:{figure}"])
            ratio = ours / theirs if theirs else float("nan")
            shown = label or figure
            print(f"{shown:<26}{ours:>12.3g}{theirs:>12.3g}{ratio:>7.2f}x  {row_target}")
            table.append(
                {
                    "figure": f"{figure}{label}" if label else figure,
                    "bastionctl": ours,
                    "openssh": theirs,
                    "against": theirs_name,
                    "measured": ours_name,
                    "ratio": ratio,
                    "target": row_target,
                }
            )
    table += report_alternated(results, loads)
    for figure, target in (
        ("--help ms", "<= 150 ms"),
        ("tunnel list ms", ""),
        ("peak RSS MB, 20 tunnels", "<= 120 MB"),
        *((figure, target_of(figure)) for figure in single_figures),
    ):
        if f"bastionctl:{figure}" not in results:
            continue
        ours = median(results[f"bastionctl:{figure}"])
        print(f"{figure:<26}{ours:>12.3g}{'':>12}{'':>8}  {target}")
        table.append({"figure": figure, "bastionctl": ours, "target": target})
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    meta = {
        "date": stamp,
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "rounds": args.rounds,
        "conn_rounds": args.conn_rounds,
        "loads": loads,
        "size_mb": args.size_mb,
        "raw": results,
        "table": table,
    }
    path = out / f"bench-{stamp}.json"
    path.write_text(json.dumps(meta, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
