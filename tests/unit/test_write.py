"""The ~/.ssh writer: bytes outside the managed part kept, no-op reruns, crash safety."""

from __future__ import annotations

import os
import shutil
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
    config.chmod(0o600)
    backups = tmp_path / "backups"
    change = write.plan(config, write.with_block(write.read_existing(config), BODY))
    backup = write.apply(change, backups)
    assert backup is not None and backup.read_bytes() == EXISTING.encode()
    assert backup.parent == backups and backup.stat().st_mode & 0o777 == 0o600
    assert config.stat().st_mode & 0o777 == 0o600
    mtime = config.stat().st_mtime_ns
    again = write.plan(config, write.with_block(write.read_existing(config), BODY))
    assert not again.changed and write.apply(again, backups) is None
    assert config.stat().st_mtime_ns == mtime
    assert len(list(backups.glob("config.bastionctl-*.bak"))) == 1


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
        write.apply(change, tmp_path / "backups")
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
            write.apply(write.plan(ssh_dir / "config", "Host x\n"), tmp_path / "backups")
    finally:
        subprocess.run(["umount", str(ssh_dir)], check=True)


def test_cli_write_check_diff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "HOME": str(tmp_path)}
    (tmp_path / ".ssh").mkdir(mode=0o700)
    (tmp_path / ".ssh" / "config").write_bytes(EXISTING.encode())
    # ssh puts control sockets under the passwd home, not $HOME: keep them in tmp_path.
    example = (repo / "bastionctl" / "templates" / "example.toml").read_text()
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
    config = load_config(
        Path(__file__).resolve().parents[2] / "bastionctl" / "templates" / "example.toml"
    )
    assert ssh_config_check(config).status is Status.SKIP
    installed = tmp_path / ".ssh" / "config.d" / "bastionctl.conf"
    installed.parent.mkdir(parents=True)
    installed.write_text(render_config(config).text)
    assert ssh_config_check(config).status is Status.OK
    installed.write_text(render_config(config).text.replace("2001:db8::2", "2001:db8::9"))
    check = ssh_config_check(config)
    assert check.status is Status.WARN and "stale" in check.detail


# --- links, modes, backups, the lock ------------------------------------------------------------


def _cli(
    tmp_path: Path, home: Path, *args: str, umask: int = 0o022
) -> subprocess.CompletedProcess[str]:
    """`bastionctl --config example.toml ssh-config ARGS` with HOME=`home`, under `umask`."""
    import sys

    repo = Path(__file__).resolve().parents[2]
    config = tmp_path / "example.toml"
    if not config.exists():
        example = (repo / "bastionctl" / "templates" / "example.toml").read_text()
        config.write_text(
            example.replace("[settings]\n", f'[settings]\ncontrol_path = "{tmp_path}/cm/%C"\n', 1)
        )
    return subprocess.run(
        [sys.executable, "-m", "bastionctl", "--config", str(config), "ssh-config", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(home)},
        umask=umask,
        timeout=60,
    )


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_symlinked_files_stay_links_and_their_targets_keep_their_modes(tmp_path: Path) -> None:
    home = tmp_path / "h"
    ssh_dir = home / ".ssh"
    (ssh_dir / "config.d").mkdir(parents=True, mode=0o700)
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    config_target = dotfiles / "ssh_config"
    config_target.write_bytes(EXISTING.encode())
    config_target.chmod(0o640)
    include_target = dotfiles / "bastionctl.conf"
    include_target.write_text("Host stale\n")
    include_target.chmod(0o664)
    (ssh_dir / "config").symlink_to(Path("..", "..", "dotfiles", "ssh_config"))
    (ssh_dir / "config.d" / "bastionctl.conf").symlink_to(include_target)
    result = _cli(tmp_path, home, "--write", umask=0o077)  # the umask takes nothing away
    assert result.returncode == 0, result.stderr
    assert (ssh_dir / "config").is_symlink() and (
        ssh_dir / "config.d" / "bastionctl.conf"
    ).is_symlink()
    assert os.readlink(ssh_dir / "config") == str(Path("..", "..", "dotfiles", "ssh_config"))
    written = config_target.read_bytes().decode()
    assert written.startswith("# added by bastionctl\r\nInclude config.d/bastionctl.conf\r\n")
    assert written.endswith(EXISTING)
    assert "ProxyJump server-01" in include_target.read_text()
    assert _mode(config_target) == 0o640 and _mode(include_target) == 0o664
    assert [p.name for p in dotfiles.iterdir() if p.name.endswith(".tmp")] == []
    # The lock files stay (unlinking a lock another process holds would split the two).
    assert (ssh_dir / ".config.bastionctl.lock").is_file()
    assert (ssh_dir / "config.d" / ".bastionctl.conf.bastionctl.lock").is_file()
    backups = sorted(p.name for p in (ssh_dir / "bastionctl-backups").iterdir())
    assert [b.split(".bastionctl-")[0] for b in backups] == ["bastionctl.conf", "config"]
    assert _mode(ssh_dir / "bastionctl-backups") == 0o700
    assert f"backup {ssh_dir / 'bastionctl-backups'}/" in result.stdout


def test_a_missing_ssh_dir_is_made_0700_and_new_files_0600(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    result = _cli(tmp_path, home, "--write", umask=0o022)
    assert result.returncode == 0, result.stderr
    ssh_dir = home / ".ssh"
    assert _mode(ssh_dir) == 0o700 and _mode(ssh_dir / "config.d") == 0o700
    assert _mode(ssh_dir / "config") == 0o600
    assert _mode(ssh_dir / "config.d" / "bastionctl.conf") == 0o600
    assert not (ssh_dir / "bastionctl-backups").exists()  # nothing to back up


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")
def test_backups_are_where_no_include_of_the_config_loads_them(tmp_path: Path) -> None:
    home = tmp_path / "h"
    ssh_dir = home / ".ssh"
    (ssh_dir / "config.d").mkdir(parents=True, mode=0o700)
    # An absolute Include: ssh -F resolves a relative one against the passwd home's ~/.ssh.
    (ssh_dir / "config").write_text(f"Include {ssh_dir}/config.d/*\n")
    (ssh_dir / "config.d" / "bastionctl.conf").write_text(
        "Host old-only\n    HostName 192.0.2.99\n\nHost server-02\n    HostName 192.0.2.98\n"
    )

    def ssh_g(alias: str) -> str:
        out = subprocess.run(
            ["ssh", "-G", "-F", str(ssh_dir / "config"), alias],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return next(line.split()[1] for line in out.splitlines() if line.startswith("hostname "))

    assert ssh_g("old-only") == "192.0.2.99"
    result = _cli(tmp_path, home, "--write")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (ssh_dir / "config.d").iterdir()) == [
        ".bastionctl.conf.bastionctl.lock",
        "bastionctl.conf",
    ]
    saved = list((ssh_dir / "bastionctl-backups").glob("bastionctl.conf.bastionctl-*.bak"))
    assert len(saved) == 1 and "192.0.2.99" in saved[0].read_text()
    assert ssh_g("old-only") == "old-only"  # the backup's Host blocks are not seen
    assert ssh_g("server-02") == "2001:db8::2"  # the new include is


def test_backups_move_out_of_the_way_of_an_include_that_would_load_them(
    tmp_path: Path, isolated_dirs: Path
) -> None:
    ssh_dir = tmp_path / "h" / ".ssh"
    ssh_dir.mkdir(parents=True)
    config = ssh_dir / "config"
    own = ssh_dir / write.BACKUP_DIR
    state = isolated_dirs / "state" / "bastionctl" / "ssh-backups"
    for text, expected in (
        ("Include config.d/*\nInclude ~/.ssh/*.conf\nInclude .*\n", own),
        ("Host x\n  Include */*\n", state),
        ("include = ~/.ssh/bastionctl-backups/*.bak\n", state),
        ('Include "bastionctl-backups"\n', state),
        (f"Include {ssh_dir}/b*\n", state),
        ("Include ${HOME}/.ssh/*\n", own),  # no variables in Include: a relative path
    ):
        config.write_text(text)
        assert write.backup_dir(ssh_dir) == expected, text
    config.write_text("")
    changes = [write.Change(config, "", "Include */*\n")]  # the config as it will be counts
    assert write.backup_dir(ssh_dir, changes) == state


def test_links_to_nothing_and_non_files_are_refused(tmp_path: Path) -> None:
    link = tmp_path / "config"
    link.symlink_to(tmp_path / "missing")
    with pytest.raises(BastionctlError, match=r"symbolic link to .*missing, which does not exist"):
        write.apply(write.plan(link, "Host x\n"), tmp_path / "backups")
    assert not (tmp_path / "missing").exists()
    directory = tmp_path / "dir"
    directory.mkdir()
    with pytest.raises(BastionctlError, match="not a regular file"):
        write.apply(write.Change(directory, "x", "Host x\n"), tmp_path / "backups")


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")
def test_a_zone_id_with_a_newline_is_a_config_error_and_nothing_is_exported(
    tmp_path: Path,
) -> None:
    home = tmp_path / "h"
    home.mkdir()
    assert _cli(tmp_path, home, "--write").returncode == 0
    include = home / ".ssh" / "config.d" / "bastionctl.conf"
    before = include.read_bytes()

    def ssh_g(alias: str) -> str:
        return subprocess.run(
            ["ssh", "-G", "-F", str(include), alias], capture_output=True, text=True, check=True
        ).stdout

    seen = {alias: ssh_g(alias) for alias in ("server-02", "anything")}
    config = tmp_path / "example.toml"
    text = config.read_text()
    hostile = r"fe80::1%x\nHost *\n  ProxyCommand sh -c id>pwned"
    config.write_text(text.replace('ipv6 = "2001:db8::2"', f'ipv6 = "{hostile}"', 1))
    line = 1 + config.read_text().splitlines().index(f'ipv6 = "{hostile}"')
    for args in (("--write",), ()):
        result = _cli(tmp_path, home, *args)
        assert result.returncode == 2, result
        errors = result.stderr.strip().splitlines()
        assert (
            len(errors) == 1
            and f"{config}:{line}: hosts.server-02.ipv6: has a zone id" in (errors[0])
        )
        assert "ProxyCommand" not in result.stdout
    assert include.read_bytes() == before
    assert {alias: ssh_g(alias) for alias in seen} == seen
    assert "proxycommand" not in seen["anything"]
