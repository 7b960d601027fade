"""Driving `bastionctl` and watching the lab from tests."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bastionctl.lab import LabInfo, render_config


def write_config(
    lab: LabInfo,
    path: Path,
    *,
    bulk: bool,
    bastion_port: int | None = None,
    known_hosts: Path | None = None,
    persist: float | None = None,
) -> Path:
    text = render_config(lab, bulk=bulk)
    if persist is not None:  # how long the agent keeps a login after its last tunnel
        text = text.replace("[settings]\n", f"[settings]\npersist = {persist}\n", 1)
    if bastion_port is not None:
        text = text.replace(
            "[bastions.server-01]\n", f"[bastions.server-01]\nport = {bastion_port}\n"
        )
    if known_hosts is not None:
        text = re.sub(r"known_hosts = \[.*\]", f'known_hosts = ["{known_hosts}"]', text)
    path.write_text(text)
    return path


def run_cli(
    *args: str, stdin: str | None = None, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastionctl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or os.environ.copy(),
    )


def mysql_login(lab: LabInfo) -> dict[str, str]:
    """User and password of the lab's MariaDB, from the defaults file `lab up` wrote."""
    defaults = dict(
        line.split("=", 1)
        for line in lab.mysql_defaults_file.read_text().splitlines()
        if "=" in line
    )
    return {"user": defaults["user"].strip(), "password": defaults["password"].strip()}


def store_secret(config: Path, secret: str, alias: str = "server-01") -> None:
    result = run_cli("--config", str(config), "otp", "set", alias, stdin=secret + "\n")
    assert result.returncode == 0, result.stderr


@dataclass
class TunnelProcess:
    """`bastionctl tunnel ...` in the foreground, as a user runs it; stopped by its pid."""

    args: list[str]
    env: dict[str, str] = field(default_factory=lambda: os.environ.copy())
    stdin: str | None = None
    proc: subprocess.Popen[str] | None = None
    stdout_lines: list[str] = field(default_factory=list)
    stderr_text: str = ""
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def start(self, timeout: float = 100) -> TunnelProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bastionctl", *self.args],
            stdin=subprocess.PIPE if self.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        if self.stdin is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(self.stdin)
            self.proc.stdin.close()
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                return self  # exited before ready; the caller checks returncode
            if "connect with:" in line:
                return self
        self.stop()
        raise AssertionError(
            f"tunnel not ready in {timeout} s: {self.stdout_lines} {self.stderr_text}"
        )

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout_lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    @property
    def ready(self) -> bool:
        return any("connect with:" in line for line in self.stdout_lines)

    def local_port(self) -> int:
        for line in self.stdout_lines:
            match = re.search(r"listening on \[?[\d.:a-f]+\]?:(\d+)", line)
            if match:
                return int(match.group(1))
        raise AssertionError(f"no listening line in {self.stdout_lines}")

    def stop(self) -> int:
        """SIGTERM (a closed tunnel exits 0; Ctrl-C's SIGINT, 130), then its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None
        self.stderr_text = self.proc.stderr.read()
        return self.proc.returncode

    def __enter__(self) -> TunnelProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something listens on `port` locally, read from /proc (never by connecting)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                return True
    return False


class LogWatch:
    """New lines of the bastion's sshd log since this watch was made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size

    def lines(self) -> list[str]:
        with self.path.open(encoding="utf-8", errors="replace") as handle:
            handle.seek(self.offset)
            return handle.read().splitlines()
