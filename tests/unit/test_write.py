"""The ~/.ssh writer: bytes outside the managed part kept, no-op reruns, crash safety."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bastionctl.errors import BastionctlError
from bastionctl.render import write

EXISTING = (
    "# my own config\r\nInclude ~/.ssh/work.conf\r\n\r\nHost legacy\r\n    User me\r\n\r\n"
    'Match host *.corp exec "true"\r\n    ForwardAgent no'  # CRLF, no final newline
)
BODY = "Host server-02\n    HostName 2001:db8::2\n"


def test_include_mode_keeps_everything_else_byte_for_byte(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_bytes(EXISTING.encode())
    new = write.with_include(EXISTING, "Include config.d/bastionctl.conf")
    assert new.endswith(EXISTING)
    assert new.startswith("# added by bastionctl\r\nInclude config.d/bastionctl.conf\r\n\r\n")
    assert write.with_include(new, "Include config.d/bastionctl.conf") == new


def test_block_mode_replaces_only_the_block(tmp_path: Path) -> None:
    first = write.with_block(EXISTING, BODY)
    assert first.endswith(EXISTING) and write.BEGIN in first and "\r\n" in first
    second = write.with_block(first, BODY.replace("::2", "::20"))
    assert second.endswith(EXISTING) and "2001:db8::20" in second and "::2\r\n" not in second
    around = "top\n" + write.with_block(None, BODY) + "bottom"
    replaced = write.with_block(around, "Host x\n")
    assert replaced.startswith("top\n") and replaced.endswith("bottom")


@pytest.mark.parametrize(
    "broken",
    [
        f"{write.BEGIN}\nHost a\n",
        f"{write.END}\n{write.BEGIN}\n",
        f"{write.BEGIN}\n{write.END}\n{write.BEGIN}\n{write.END}\n",
        "# >>> bastionctl managed block >>> (edited)\n",
    ],
)
def test_markers_it_cannot_make_sense_of_are_refused(broken: str) -> None:
    with pytest.raises(BastionctlError, match="markers"):
        write.with_block(broken, BODY)


def test_apply_backs_up_writes_0600_and_second_run_is_a_no_op(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_bytes(EXISTING.encode())
    change = write.plan(config, write.with_block(write.read_existing(config), BODY))
    backup = write.apply(change)
    assert backup is not None and backup.read_bytes() == EXISTING.encode()
    assert config.stat().st_mode & 0o777 == 0o600
    mtime = config.stat().st_mtime_ns
    again = write.plan(config, write.with_block(write.read_existing(config), BODY))
    assert not again.changed and write.apply(again) is None
    assert config.stat().st_mtime_ns == mtime
    assert len(list(tmp_path.glob("config.bastionctl-*.bak"))) == 1


def test_crash_between_temp_write_and_rename_leaves_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    config.write_bytes(EXISTING.encode())
    change = write.plan(config, "replaced\n")

    def crash(*_args: object) -> None:
        raise OSError(5, "simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(BastionctlError, match="nothing was changed"):
        write.apply(change)
    assert config.read_bytes() == EXISTING.encode()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.root
def test_read_only_ssh_dir_is_a_clear_error(tmp_path: Path) -> None:
    ssh_dir = tmp_path / "ro"
    ssh_dir.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ssh_dir)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        if os.environ.get("CI"):
            pytest.fail("cannot mount a read-only tmpfs under CI (root expected)")
        pytest.skip("needs root to mount a read-only directory")
    try:
        with pytest.raises(BastionctlError, match=r"cannot write in .*Read-only file system"):
            write.apply(write.plan(ssh_dir / "config", "Host x\n"))
    finally:
        subprocess.run(["umount", str(ssh_dir)], check=True)


def test_cli_write_check_diff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "HOME": str(tmp_path)}
    (tmp_path / ".ssh").mkdir(mode=0o700)
    (tmp_path / ".ssh" / "config").write_bytes(EXISTING.encode())
    # ssh puts control sockets under the passwd home, not $HOME: keep them in tmp_path.
    example = (repo / "configs" / "example.toml").read_text()
    config = tmp_path / "example.toml"
    config.write_text(
        example.replace("[settings]\n", f'[settings]\ncontrol_path = "{tmp_path}/cm/%C"\n', 1)
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bastionctl", "--config", str(config), "ssh-config", *args],
            capture_output=True,
            text=True,
            env=env,
        )

    assert cli("--check").returncode == 1
    diff = cli("--diff")
    assert diff.returncode == 0 and "+Include config.d/bastionctl.conf" in diff.stdout
    assert cli("--write").returncode == 0
    assert cli("--check").returncode == 0
    written = (tmp_path / ".ssh" / "config").read_bytes().decode()
    assert written.endswith(EXISTING)
    include = tmp_path / ".ssh" / "config.d" / "bastionctl.conf"
    assert include.stat().st_mode & 0o777 == 0o600 and "ProxyJump server-01" in include.read_text()
    assert "nothing written" in cli("--write").stdout


def test_doctor_tells_fresh_from_stale_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastionctl.config import load_config
    from bastionctl.doctor import Status, ssh_config_check
    from bastionctl.render.ssh_config import render_config

    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "example.toml")
    assert ssh_config_check(config).status is Status.SKIP
    installed = tmp_path / ".ssh" / "config.d" / "bastionctl.conf"
    installed.parent.mkdir(parents=True)
    installed.write_text(render_config(config).text)
    assert ssh_config_check(config).status is Status.OK
    installed.write_text(render_config(config).text.replace("2001:db8::2", "2001:db8::9"))
    check = ssh_config_check(config)
    assert check.status is Status.WARN and "stale" in check.detail
