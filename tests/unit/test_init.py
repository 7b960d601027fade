"""`bastionctl init` and `config path`, run as real processes; imports checked through
`hosts --json` and, host by host, against what `ssh -G` makes of the same ssh config."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bastionctl.starter.sshconf import SshConfig, parse_text, split_args
from tests.lab.helpers import run_cli

# The reference setup's shape: a bastion by alias and by user@host:port, an Include with a
# glob, the older ProxyCommand spelling, a multi-hop jump, a host without a jump, Match and
# `Host *` (whose User applies to the hosts that set none, as in ssh).
MAIN = """\
# ~/.ssh/config of an operator
Include {inc}/*.conf
Include {inc}/missing-*.conf

Host server-01
    HostName 01.example.com
    User admin
    IdentityFile ~/.ssh/server-01
    HostKeyAlias server-01

Host server-02 web-02
    HostName 2001:db8::2
    USER ubuntu
    ProxyJump server-01
    IdentityFile ~/.ssh/server-02
    IdentityFile ~/.ssh/second-key-ignored

Host server-03
  hostname=2001:db8::3
  User = "ec2"
  ProxyJump admin@bastion.example.net:2222
  HostName 2001:db8::99

Host legacy
  HostName 192.0.2.5
  ProxyCommand ssh -q -W %h:%p -l ops server-01

Host twohop
  ProxyJump server-01,bastion.example.net

Host gitlab.example.org
  User git

Match host server-02
  User someone-else

Host *.internal !skip.internal
  ProxyJump server-01

Host *
  ServerAliveInterval 30
  User fallback
"""
INCLUDED = """\
Host inc-host
  HostName inc.example.com
  Port 2200
  ProxyJump server-01
"""


def write_ssh_config(root: Path) -> Path:
    inc = root / "ssh config.d"
    inc.mkdir(parents=True)
    (inc / "10-inc.conf").write_text(INCLUDED)
    main = root / "ssh_config"
    main.write_text(MAIN.format(inc=str(inc).replace(" ", "\\ ")))
    return main


def hosts_json(config: Path) -> dict[str, dict[str, Any]]:
    result = run_cli("--config", str(config), "hosts", "--json")
    assert result.returncode == 0, result.stderr
    return {row["alias"]: row for row in json.loads(result.stdout)}


def test_init_from_ssh_config_imports_what_jumps_once(tmp_path: Path) -> None:
    source = write_ssh_config(tmp_path)
    config = tmp_path / "new" / "config.toml"
    result = run_cli("--config", str(config), "init", "--from-ssh-config", str(source))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"bastionctl: warning: host twohop ({source}:28) not imported: "
        "multi-hop ProxyJump server-01,bastion.example.net (bastionctl jumps once)"
    )
    assert lines[1] == (
        f"bastionctl: imported 3 bastions and 5 hosts from {source}; skipped 2 wildcard blocks; "
        f"skipped 1 host without a jump (gitlab.example.org); 1 Match block not imported "
        f"({source}:34); 1 not imported (above)"
    )
    assert lines[2] == f"bastionctl: wrote {config}; `bastionctl hosts` lists its inventory"

    rows = hosts_json(config)
    assert {a: r["role"] for a, r in rows.items()} == {
        "server-01": "bastion",
        "bastion": "bastion",
        "server-01-ops": "bastion",
        "server-02": "host",
        "web-02": "host",
        "server-03": "host",
        "legacy": "host",
        "inc-host": "host",
    }
    home = Path.home()

    def row(alias: str) -> tuple[Any, ...]:
        r = rows[alias]
        return (r["address"], r["user"], r["port"], r["bastion"], r["identity_file"])

    assert row("server-01") == ("01.example.com", "admin", 22, None, f"{home}/.ssh/server-01")
    assert row("bastion") == ("bastion.example.net", "admin", 2222, None, None)
    assert row("server-01-ops") == ("01.example.com", "ops", 22, None, f"{home}/.ssh/server-01")
    assert row("server-02") == ("2001:db8::2", "ubuntu", 22, "server-01", f"{home}/.ssh/server-02")
    assert row("web-02") == row("server-02")
    assert row("server-03") == ("2001:db8::3", "ec2", 22, "bastion", None)
    assert row("legacy") == ("192.0.2.5", "fallback", 22, "server-01-ops", None)
    assert row("inc-host") == ("inc.example.com", "fallback", 2200, "server-01", None)
    assert rows["server-02"]["ipv6"] == "2001:db8::2" and rows["legacy"]["ipv4"] == "192.0.2.5"
    assert rows["inc-host"]["fqdn"] == "inc.example.com"
    text = config.read_text()
    assert 'host_key_alias = "server-01"' in text
    assert text.startswith("# bastionctl config, written by `bastionctl init --from-ssh-config")


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")
def test_the_parser_agrees_with_ssh_G(tmp_path: Path) -> None:
    """Host by host, the options that become the config are the ones ssh itself resolves."""
    source = write_ssh_config(tmp_path)
    parsed = SshConfig(source, Path.home())
    local = getpass.getuser()
    for name in (
        "server-01", "server-02", "web-02", "server-03", "legacy", "twohop",
        "gitlab.example.org", "inc-host", "a.internal", "skip.internal",
    ):  # fmt: skip
        out = subprocess.run(
            ["ssh", "-G", "-F", str(source), name],
            capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
        ).stdout  # fmt: skip
        resolved: dict[str, str] = {}
        for line in out.splitlines():
            key, _, value = line.partition(" ")
            resolved.setdefault(key, value)
        ours = parsed.options(name)
        assert resolved["hostname"] == (ours.first("hostname") or name).lower(), name
        assert resolved["user"] == (ours.first("user") or local), name
        assert resolved["port"] == (ours.first("port") or "22"), name
        proxy = ours.proxy
        assert resolved.get("proxyjump") == (
            proxy.args[0] if proxy and proxy.keyword == "proxyjump" else None
        ), name
        assert resolved.get("proxycommand") == (
            proxy.raw if proxy and proxy.keyword == "proxycommand" else None
        ), name


def test_a_value_config_refuses_skips_that_host_and_names_it(tmp_path: Path) -> None:
    source = tmp_path / "ssh_config"
    source.write_text(
        "Host gw\n  HostName 198.51.100.7\n  User admin\n"
        'Host good\n  HostName 2001:db8::5\n  ProxyJump gw\n  User "ok"\n'
        'Host bad\n  HostName 2001:db8::6\n  ProxyJump gw\n  User "two words"\n'
        "Host tokens\n  HostName %h.example.com\n  ProxyJump gw\n  User x\n"
        "Host odd\n  HostName %C\n  ProxyJump gw\n  User x\n"
        "Host badgw\n  ProxyJump -oProxyCommand=x\n"
    )
    config = tmp_path / "config.toml"
    result = run_cli("--config", str(config), "init", "--from-ssh-config", str(source))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [
        f"bastionctl: warning: host bad ({source}:8) not imported: hosts.bad.user: must be a "
        "POSIX-style user name (letters, digits, '_', '.', '-'), got 'two words'",
        f"bastionctl: warning: host odd ({source}:16) not imported: HostName uses %C, which "
        "bastionctl does not expand",
        f"bastionctl: warning: host badgw ({source}:20) not imported: bastion -oProxyCommand=x: "
        "bastions.-oProxyCommand=x: bad name: must be letters, digits, '.', '_' or '-' (at most "
        "63, no leading symbol)",
    ]
    rows = hosts_json(config)
    assert sorted(rows) == ["good", "gw", "tokens"]
    assert rows["tokens"]["address"] == "tokens.example.com"
    assert rows["gw"]["address"] == "198.51.100.7"


def test_init_never_overwrites_and_print_writes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    printed = run_cli("--config", str(config), "init", "--print")
    assert printed.returncode == 0 and not config.exists()
    assert "[bastions.server-01]" in printed.stdout
    made = run_cli("--config", str(config), "init")
    assert made.returncode == 0, made.stderr
    assert config.read_text() == printed.stdout
    assert sorted(hosts_json(config)) == ["server-01", "server-02", "server-03"]
    config.write_text("# mine\n")
    again = run_cli("--config", str(config), "init")
    assert again.returncode == 2
    assert again.stderr.splitlines() == [
        f"bastionctl: error: {config} already exists; init never replaces a config; "
        "edit it, or see the starter with `bastionctl init --print`"
    ]
    assert config.read_text() == "# mine\n"


def test_nothing_to_import_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "ssh_config"
    source.write_text("Host *\n  User me\nHost plain\n  HostName 192.0.2.1\n")
    config = tmp_path / "config.toml"
    result = run_cli("--config", str(config), "init", "--from-ssh-config", str(source))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"bastionctl: imported 0 bastions and 0 hosts from {source}; skipped 1 wildcard block; "
        "skipped 1 host without a jump (plain)",
        f"bastionctl: error: nothing to import from {source}: no host there jumps through one "
        "bastion; `bastionctl init` alone writes the example config to start from",
    ]
    assert not config.exists()


def test_config_path_follows_option_env_and_default(
    isolated_dirs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = isolated_dirs / "config" / "bastionctl" / "config.toml"
    result = run_cli("config", "path")
    assert result.stdout == f"{default}\n"
    assert result.stderr == (
        f"bastionctl: {default} does not exist yet; `bastionctl init` writes it\n"
    )
    # (help text is wrapped at 80 columns, a long path too: compare without whitespace)
    assert f"else{default}." in "".join(run_cli("config", "path", "--help").stdout.split())
    assert f"else{default})." in "".join(run_cli("--help").stdout.split())
    # `init` writes where `config path` said; then that is the config in use.
    assert run_cli("init").returncode == 0
    assert default.is_file() and stat.S_IMODE(default.stat().st_mode) == 0o600
    assert run_cli("config", "path").stdout == f"{default}\n"
    monkeypatch.setenv("BASTIONCTL_CONFIG", str(tmp_path / "env.toml"))
    assert run_cli("config", "path").stdout == f"{tmp_path / 'env.toml'}\n"
    other = tmp_path / "other.toml"
    assert run_cli("--config", str(other), "config", "path").stdout == f"{other}\n"

    listed = run_cli("config", "path", "--all").stdout.splitlines()
    assert listed == [
        f"config   {tmp_path / 'env.toml'} (not created yet)",
        f"cache    {isolated_dirs / 'cache' / 'bastionctl'} (not created yet)",
        f"state    {isolated_dirs / 'state' / 'bastionctl'} (not created yet)",
        f"data     {isolated_dirs / 'data' / 'bastionctl'} (not created yet)",
        f"runtime  {isolated_dirs / 'run' / 'bastionctl'} (not created yet)",
    ]
    assert not (isolated_dirs / "run" / "bastionctl").exists()  # printed, not made


@pytest.mark.parametrize(
    "args",
    [
        ["tunnel", "rdp", "server-02"],
        ["tunnel", "port", "server-02", "22"],
        ["ssh", "server-02"],
        ["doctor", "server-02"],
        ["otp", "status", "server-01"],
    ],
)
def test_without_a_config_each_command_names_the_path_and_init(
    isolated_dirs: Path, args: list[str]
) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    default = isolated_dirs / "config" / "bastionctl" / "config.toml"
    [line] = result.stderr.splitlines()
    assert f"no config file: `bastionctl init` writes one to {default}" in line


@pytest.mark.parametrize("args", [["hosts"], ["ssh-config"], ["bastion-hosts"]])
def test_empty_output_without_a_config_says_why(isolated_dirs: Path, args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 0
    default = isolated_dirs / "config" / "bastionctl" / "config.toml"
    [line] = result.stderr.splitlines()
    assert f"(no config file: `bastionctl init` writes one to {default})" in line


def test_split_args_quotes_escapes_and_comments() -> None:
    assert split_args('"a b" c\\ d \'e"f\' g#h # rest', "f:1") == ["a b", "c d", 'e"f', "g#h"]
    assert split_args('x"y z"w', "f:1") == ["xy zw"]


def test_keywords_separators_and_first_value() -> None:
    parsed = parse_text("HOST a\n  hostNAME=h1\n  HostName h2\n\tPort = 2\n", Path("f"))
    assert [(d.keyword, d.args, d.line) for d in parsed] == [
        ("host", ("a",), 1),
        ("hostname", ("h1",), 2),
        ("hostname", ("h2",), 3),
        ("port", ("2",), 4),
    ]


def test_relative_includes_are_under_ssh_dir_and_inactive_includes_never_apply(
    tmp_path: Path,
) -> None:
    ssh = tmp_path / "home" / ".ssh"
    (ssh / "conf.d").mkdir(parents=True)
    (ssh / "conf.d" / "a.conf").write_text("User from-include\nHost b\n  Port 2\n")
    config = tmp_path / "config"
    config.write_text("Host x\n  Include conf.d/*.conf\nHost a\n  Include conf.d/*.conf\n")
    parsed = SshConfig(config, tmp_path / "home")
    assert parsed.options("a").first("user") == "from-include"
    assert parsed.options("x").first("user") == "from-include"
    # `Host b` inside a file included from an inactive block never matches (OpenSSH).
    assert parsed.options("b").first("port") is None
    assert os.fspath(ssh) in str(list(parsed.include_files(parse_text(
        "Include conf.d/*.conf", config)[0])))  # fmt: skip
