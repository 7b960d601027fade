"""The runtime directory (control sockets, the askpass helper, pid files) is the user's alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastionctl import paths
from bastionctl.errors import BastionctlError
from bastionctl.system import channel, files


@pytest.fixture(autouse=True)
def fresh_choice() -> Iterator[None]:
    files._runtime_base.cache_clear()
    yield
    files._runtime_base.cache_clear()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastionctl", *args], capture_output=True, text=True, timeout=60
    )


def test_xdg_runtime_dir_of_the_user_is_used(isolated_dirs: Path) -> None:
    assert files.runtime_dir() == isolated_dirs / "run" / "bastionctl"
    assert files.runtime_dir().stat().st_mode & 0o777 == 0o700


def test_without_xdg_runtime_dir_nothing_goes_to_the_shared_tmp(
    isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """platformdirs would say /tmp/runtime-UID, which another user may have made first."""
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert paths.platform_runtime_dir().is_relative_to(tempfile.gettempdir())
    chosen = files.runtime_dir()
    assert chosen == paths.state_dir() / "run"
    assert chosen.is_relative_to(isolated_dirs)


def test_an_xdg_runtime_dir_others_may_write_in_is_not_used(
    isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    shared = isolated_dirs / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    chosen = files.runtime_dir()
    files.runtime_dir()
    assert chosen == paths.state_dir() / "run"
    [warning] = [r.getMessage() for r in caplog.records if "XDG_RUNTIME_DIR" in r.getMessage()]
    assert str(shared) in warning  # said once, however often the directory is asked for
    # What lives in the runtime directory stays out of the shared one, through the CLI too.
    assert run_cli("tunnel", "list").returncode == 0
    assert list(shared.iterdir()) == []


def test_a_symlink_in_place_of_the_runtime_dir_is_one_clear_error(
    isolated_dirs: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (isolated_dirs / "run" / "bastionctl").symlink_to(elsewhere)
    with pytest.raises(BastionctlError, match="is not a directory but a link or a file"):
        files.runtime_dir()
    result = run_cli("tunnel", "list")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "link or a file" in result.stderr
    assert list(elsewhere.iterdir()) == []


def test_files_in_it_are_created_private_and_never_through_a_link(
    isolated_dirs: Path, tmp_path: Path
) -> None:
    from bastionctl.atomic import write_atomic

    target = files.runtime_dir() / "askpass"
    write_atomic(target, "#!/bin/sh\n", mode=0o700)
    assert target.stat().st_mode & 0o777 == 0o700
    log = files.runtime_dir() / "agent.log"
    decoy = tmp_path / "decoy"
    log.symlink_to(decoy)
    with pytest.raises(BastionctlError, match="cannot open the log"):
        files.open_private_log(log)
    assert not decoy.exists()


@pytest.mark.root
def test_a_server_of_another_user_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """A socket in the user's place, listened on by another uid, gets nothing from a client."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("needs root under CI (to listen as another user)")
        pytest.skip("needs root (to listen as another user)")
    shared = Path(tempfile.mkdtemp(prefix="bcl-foreign-"))
    try:
        shared.chmod(0o777)
        path = shared / "agent.sock"
        code = (
            "import os, socket, sys, time\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)\n"
            "c, _ = s.accept(); c.settimeout(3)\n"
            "try:\n"
            "    data = c.recv(100)\n"
            "except OSError:\n"
            "    data = b''\n"
            "print(repr(data), flush=True)\n"
        )
        server = subprocess.Popen(
            [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 10
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            with pytest.raises(channel.PeerRefused, match="belongs to another user"):
                channel.connect(path, timeout=5)
            out, _ = server.communicate(timeout=10)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        assert out.strip() == "b''"  # the client hung up without a byte
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_the_unix_socket_is_0600_from_the_start(isolated_dirs: Path) -> None:
    path = channel.endpoint(files.runtime_dir(), "probe")
    sock = channel.listen(path)
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no staging
    finally:
        sock.close()
        channel.unpublish(path)


@pytest.mark.root
def test_tunnel_list_on_a_runtime_directory_it_may_not_use_is_one_line(
    isolated_dirs: Path,
) -> None:
    """tunnels/ is mode 0000 and immutable (chattr +i): nobody, not even root, may chmod it."""
    tunnels = Path(os.environ["XDG_RUNTIME_DIR"]) / paths.APP / "tunnels"
    tunnels.mkdir(parents=True)
    tunnels.chmod(0)
    if subprocess.run(["chattr", "+i", str(tunnels)], capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("needs root and a file system with chattr +i under CI")
        pytest.skip("cannot make a directory immutable here (root and chattr +i)")
    try:
        result = run_cli("tunnel", "list")
    finally:
        subprocess.run(["chattr", "-i", str(tunnels)], check=True)
        tunnels.chmod(0o700)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line == (
        f"bastionctl: error: the directory {tunnels} is mode 0000 and cannot be made 0700: "
        "Operation not permitted; fix its mode (is it immutable, or on a read-only file system?)"
    )
