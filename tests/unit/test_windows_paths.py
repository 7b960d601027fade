"""Windows key paths in the config: accepted, written with `/` (quoted with a space), read
back by the real ssh; and no path the config accepts is one the ssh config renderer drops."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PureWindowsPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastionctl.config import parse_config
from bastionctl.errors import ConfigError
from bastionctl.inventory import tags
from bastionctl.render.ssh_config import (
    Flavour,
    control_dir,
    options_from,
    render,
    render_config,
)
from bastionctl.render.write import include_line
from bastionctl.system import api

BASTION = """\
[settings]
known_hosts = [{known_hosts}]
{extra}
[bastions.b]
fqdn = "bastion.example.com"
user = "op"
identity_file = {identity}

[hosts.h]
ipv6 = "2001:db8::2"
user = "u"
identity_file = {identity}
"""
IDENTITY_LINE = 7  # of BASTION: the bastion's identity_file


def config_text(identity: str, known_hosts: str = "'/etc/kh'", extra: str = "") -> str:
    return BASTION.format(identity=identity, known_hosts=known_hosts, extra=extra)


def ssh_g(text: str, alias: str, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "ssh_config"
    path.write_text(text, encoding="utf-8")
    out = subprocess.run(
        ["ssh", "-G", "-F", str(path), alias], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def set_view(monkeypatch: pytest.MonkeyPatch, view: str | None) -> None:
    if view:
        monkeypatch.setenv(api.VIEW_SETTING, view)
    else:
        monkeypatch.delenv(api.VIEW_SETTING, raising=False)
    api.view.cache_clear()
    api.has.cache_clear()


@pytest.fixture(autouse=True)
def fresh_view() -> Iterator[None]:
    """The view is read once per process: cleared before, and after monkeypatch (set up
    later, so undone first) has put the environment back."""
    api.view.cache_clear()
    api.has.cache_clear()
    yield
    api.view.cache_clear()
    api.has.cache_clear()


@pytest.mark.parametrize(
    ("written", "expected", "rendered"),
    [
        (r"'C:\Users\me\.ssh\id_ed25519'", "C:/Users/me/.ssh/id_ed25519", None),
        ('"C:/Users/me/.ssh/id_ed25519"', "C:/Users/me/.ssh/id_ed25519", None),
        ('"C:\\\\Users\\\\me\\\\.ssh\\\\id_ed25519"', "C:/Users/me/.ssh/id_ed25519", None),
        (
            r"'C:\Users\Jane Doe\.ssh\id'",
            "C:/Users/Jane Doe/.ssh/id",
            '"C:/Users/Jane Doe/.ssh/id"',
        ),
        (r"'d:\keys\José Núñez\id'", "d:/keys/José Núñez/id", '"d:/keys/José Núñez/id"'),
        (r"'\\fileserver\keys\me\id'", "//fileserver/keys/me/id", None),
        (r"'C:\Users\me\.ssh\100%'", "C:/Users/me/.ssh/100%", "C:/Users/me/.ssh/100%%"),
    ],
)
def test_windows_identity_files_are_accepted_and_written_as_openssh_reads_them(
    tmp_path: Path, written: str, expected: str, rendered: str | None
) -> None:
    config = parse_config(config_text(written), tmp_path / "c.toml")
    bastion = config.inventory.bastions["b"]
    # As written, on every OS: not made relative to the config's directory on Linux.
    assert str(bastion.identity_file) == expected
    assert config.inventory.hosts["h"].identity_file == bastion.identity_file
    line = f"    IdentityFile {rendered or expected}"
    for flavour in Flavour:
        text = render_config(config, flavour=flavour)
        assert not text.warnings
        assert text.text.splitlines().count(line) == 2
    windows = render_config(config, flavour=Flavour.WINDOWS).text
    assert "\\" not in windows
    for alias in ("b", "h"):
        seen = ssh_g(windows, alias, tmp_path)
        # ssh reports the file as written, %% and all (it expands tokens when it uses it).
        assert seen["identityfile"] == (rendered or expected).strip('"')
        assert seen["hostname"] in ("bastion.example.com", "2001:db8::2")


def test_windows_known_hosts_and_control_path(tmp_path: Path) -> None:
    text = config_text(
        r"'C:\k\id'",
        known_hosts=r"'C:\Users\Jane Doe\.ssh\known_hosts', 'C:\ProgramData\ssh\known_hosts'",
        extra=r"control_path = 'C:\Users\Jane Doe\.ssh\cm\%C'",
    )
    config = parse_config(text, tmp_path / "c.toml")
    assert [str(p) for p in config.settings.known_hosts] == [
        "C:/Users/Jane Doe/.ssh/known_hosts",
        "C:/ProgramData/ssh/known_hosts",
    ]
    assert config.settings.control_path == "C:/Users/Jane Doe/.ssh/cm/%C"
    windows = render_config(config, flavour=Flavour.WINDOWS)
    posix = render_config(config, flavour=Flavour.POSIX)
    assert not windows.warnings and not posix.warnings
    assert (
        '    UserKnownHostsFile "C:/Users/Jane Doe/.ssh/known_hosts" C:/ProgramData/ssh/known_hosts'
        in windows.text.splitlines()
    )
    assert "ControlPath" not in windows.text
    assert '    ControlPath "C:/Users/Jane Doe/.ssh/cm/%C"' in posix.text.splitlines()
    seen = ssh_g(windows.text, "h", tmp_path)
    assert seen["userknownhostsfile"] == (
        "C:/Users/Jane Doe/.ssh/known_hosts C:/ProgramData/ssh/known_hosts"
    )
    assert control_dir(config.settings, Flavour.WINDOWS) is None


def test_key_path_template_takes_a_windows_path(tmp_path: Path) -> None:
    text = "[inventory]\nkey_path = 'C:\\Users\\Jane Doe\\.ssh\\{key_name}.pem'\n"
    config = parse_config(text, tmp_path / "c.toml")
    assert config.inventory_settings.key_path == "C:/Users/Jane Doe/.ssh/{key_name}.pem"
    with pytest.raises(ConfigError, match=r"c\.toml:3: inventory\.key_path: may only have"):
        parse_config("[inventory]\n\nkey_path = '/k/{key_name}#1'\n", tmp_path / "c.toml")


def test_ec2_key_tags_stay_strict() -> None:
    for value in (r"C:\Users\me\.ssh\id", "C:/Users/Jane Doe/id", "/k ey"):
        with pytest.raises(ValueError):
            tags.key_path(value)


def test_a_backslash_separates_on_windows_only_outside_drive_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = config_text(r"'~\.ssh\id_ed25519'")
    with pytest.raises(ConfigError) as raised:
        parse_config(text, tmp_path / "c.toml")
    assert str(raised.value).startswith(f"{tmp_path / 'c.toml'}:{IDENTITY_LINE}: ")
    assert "bastions.b.identity_file: has a backslash" in str(raised.value)
    set_view(monkeypatch, "win32")
    assert api.family() == "windows"
    config = parse_config(text, tmp_path / "c.toml")
    assert config.inventory.bastions["b"].identity_file == Path("~/.ssh/id_ed25519").expanduser()
    windows = render_config(config)  # this machine's flavour: Windows, in this view
    assert "    ControlMaster" not in windows.text and "ServerAliveInterval 15" in windows.text
    assert control_dir(config.settings) is None
    set_view(monkeypatch, None)
    assert "ControlMaster auto" in render_config(config).text


@pytest.mark.parametrize(
    ("written", "why"),
    [
        ('"/keys/a\\"b"', "may only have"),
        ("'/keys/id#1'", "may only have"),
        ("'/keys/(old)/id'", "may only have"),
        ("'/keys/a=b'", "may only have"),
        ("' /keys/id'", "must not start or end with a space"),
        ("'/keys/id '", "must not start or end with a space"),
        (r"'/keys/a\b'", "has a backslash"),
        ('"/keys/a\\tb"', "control characters"),
        ("'~nosuchuser-bastionctl/id'", "cannot expand ~"),
    ],
)
def test_a_path_the_renderer_refuses_is_a_config_error_with_file_and_line(
    tmp_path: Path, written: str, why: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(config_text(written), tmp_path / "c.toml")
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'c.toml'}:{IDENTITY_LINE}: bastions.b.identity_file: ")
    assert why in message


def test_the_expanded_path_is_checked_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    odd = tmp_path / "configs (old)"
    odd.mkdir()
    with pytest.raises(ConfigError, match=r"c\.toml:7: bastions\.b\.identity_file: may only"):
        parse_config(config_text("'keys/id'"), odd / "c.toml")  # relative to the config's dir
    monkeypatch.setenv("HOME", str(odd))
    with pytest.raises(ConfigError, match=r"c\.toml:7: bastions\.b\.identity_file: may only"):
        parse_config(config_text("'~/.ssh/id'"), tmp_path / "c.toml")
    with pytest.raises(ConfigError, match=r"c\.toml:2: settings\.known_hosts: may only"):
        parse_config(config_text("'/k'", known_hosts="'~/.ssh/known_hosts'"), tmp_path / "c.toml")


def toml_string(value: str) -> str:
    escaped = "".join(
        "\\" + c if c in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c
        for c in value
    )
    return f'"{escaped}"'


PATHS = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=24
) | st.builds(
    lambda drive, parts: f"{drive}:\\" + "\\".join(parts),
    st.sampled_from("CdZ"),
    st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=8), max_size=4),
)


@pytest.mark.parametrize("view", [None, "win32"])
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(identity=PATHS)
def test_the_config_accepts_only_identity_files_the_renderer_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, view: str | None, identity: str
) -> None:
    """Either a config error naming the file, the line and the key, or every flavour writes
    the path: never a host left out of the ssh config (which used to exit 0)."""
    set_view(monkeypatch, view)
    path = tmp_path / "c.toml"
    try:
        config = parse_config(config_text(toml_string(identity)), path)
    except ConfigError as exc:
        where = rf"{re.escape(str(path))}:{IDENTITY_LINE}: bastions\.b\.identity_file: "
        assert re.match(where, str(exc)), str(exc)
        return
    for flavour in Flavour:
        rendered = render(config.inventory, options_from(config.settings), [], flavour=flavour)
        assert not rendered.warnings, (identity, rendered.warnings)
        assert rendered.text.count("    IdentityFile ") == 2


def test_include_lines_use_slashes_and_quotes(tmp_path: Path) -> None:
    home = PureWindowsPath(r"C:\Users\Jane Doe\.ssh")
    inside = home / "config.d" / "bastionctl.conf"
    assert include_line(inside, home) == "Include config.d/bastionctl.conf"  # type: ignore[arg-type]
    outside = PureWindowsPath(r"D:\ssh configs\bastionctl.conf")
    assert include_line(outside, home) == 'Include "D:/ssh configs/bastionctl.conf"'  # type: ignore[arg-type]
    # The real ssh follows a quoted Include with a space.
    included = tmp_path / "ssh configs" / "bastionctl.conf"
    included.parent.mkdir()
    included.write_text("Host b\n    HostName 2001:db8::1\n    User op\n")
    main = tmp_path / "config"
    main.write_text(include_line(included, tmp_path / ".ssh") + "\n")
    assert include_line(included, tmp_path / ".ssh").startswith('Include "/')
    out = subprocess.run(
        ["ssh", "-G", "-F", str(main), "b"], capture_output=True, text=True, check=True
    ).stdout
    assert "user op" in out.splitlines() and "hostname 2001:db8::1" in out.splitlines()


def test_write_in_the_windows_view_creates_no_control_directory(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), api.VIEW_SETTING: "win32"}
    config = tmp_path / "c.toml"
    config.write_text(
        config_text(r"'C:\Users\Jane Doe\.ssh\id'", extra=f'control_path = "{tmp_path}/cm/%C"')
    )
    written = subprocess.run(
        [sys.executable, "-m", "bastionctl", "--config", str(config), "ssh-config", "--write"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert written.returncode == 0, written.stderr
    assert not (tmp_path / "cm").exists()
    include = (tmp_path / ".ssh" / "config.d" / "bastionctl.conf").read_text()
    assert "    ControlMaster" not in include and "ServerAliveInterval 15" in include
    assert '    IdentityFile "C:/Users/Jane Doe/.ssh/id"' in include.splitlines()
    assert "Include config.d/bastionctl.conf" in (tmp_path / ".ssh" / "config").read_text()
    # Without the view the same command makes the ControlPath's directory, mode 0700.
    del env[api.VIEW_SETTING]
    subprocess.run(
        [sys.executable, "-m", "bastionctl", "--config", str(config), "ssh-config", "--write"],
        capture_output=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert (tmp_path / "cm").stat().st_mode & 0o777 == 0o700
