from __future__ import annotations

from pathlib import Path

import pytest

from bastionctl.config import load_config, parse_config, resolve_config_path
from bastionctl.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

GOOD = """
[settings]
known_hosts = ["kh"]

[bastions.server-01]
fqdn = "01.example.com"
user = "admin"
identity_file = "~/.ssh/server-01"

[hosts.server-02]
ipv6 = "2001:db8::2"
user = "ubuntu"
platform = "linux"
services = ["mysql"]

[hosts.server-03]
ipv6 = "2001:DB8:0::3"
user = "ec2"
platform = "windows"

[services.redis]
port = 6379
"""


def test_example_config_reproduces_the_reference_setup() -> None:
    config = load_config(REPO / "bastionctl" / "templates" / "example.toml")
    inventory = config.inventory
    assert sorted(inventory.bastions) == ["server-01"]
    assert sorted(inventory.hosts) == ["server-02", "server-03"]
    assert inventory.hosts["server-02"].ipv6 == "2001:db8::2"
    assert inventory.hosts["server-03"].services == ("rdp", "mssql")
    assert inventory.bastion_for(inventory.hosts["server-03"]).user == "admin"


def test_good_config_is_typed_and_defaulted(tmp_path: Path) -> None:
    config = parse_config(GOOD, tmp_path / "c.toml")
    host3 = config.inventory.hosts["server-03"]
    assert host3.bastion == "server-01"  # the only bastion
    assert host3.services == ("rdp",)  # windows default
    assert host3.ipv6 == "2001:db8::3"  # normalised
    assert host3.connect_host == "2001:db8::3"
    assert config.settings.known_hosts == (tmp_path / "kh",)  # relative to the config file
    bastion = config.inventory.bastions["server-01"]
    assert bastion.identity_file == Path("~/.ssh/server-01").expanduser()
    assert config.services.get("redis").local_port == 56379
    assert config.services.get("sqlserver").name == "mssql"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[hosts.a]\nusr = "x"\n', r"c.toml:2: hosts.a.usr: unknown key"),
        ('[settings]\nconnect_timeout = "soon"\n', r"c.toml:2: settings.connect_timeout"),
        ('[bastions.b]\nuser = "a"\nfqdn = "x"\nport = 70000\n', r"c.toml:4: bastions.b.port"),
        ('[bastions.b]\nuser = "a;rm -rf"\nfqdn = "x"\n', r"c.toml:2: bastions.b.user"),
        ('[bastions.b]\nuser = "a"\nipv6 = "10.0.0.1"\n', r"bastions.b.ipv6: must be an IPv6"),
        ('[bastions.b]\nuser = "a"\n', r"c.toml:1: bastions.b: needs an address"),
        ('[bastions."b c"]\nuser = "a"\n', r"bastions.b c: bad name"),
        ("[hostz.a]\n", r"hostz: unknown section"),
        ('[hosts.a]\nuser = "u"\nipv6 = "::1"\n', r"hosts.a.bastion: no bastion is defined"),
        (
            '[bastions.b]\nuser="a"\nipv6="::1"\n[hosts.a]\nuser = "u"\nipv6 = "::2"\n'
            'services = ["ftp"]\n',
            r"c.toml:7: hosts.a.services: unknown service 'ftp'",
        ),
        (
            '[bastions.b]\nuser="a"\nipv6="::1"\n[hosts.a]\nuser = "u"\nipv6 = "::2"\n'
            'bastion = "nope"\n',
            r"hosts.a.bastion: unknown bastion 'nope'",
        ),
        ('[services.x]\nport = 1\nconnection = "{user}"\n', r"services.x.connection"),
        ("[settings]\npersist = -1\n", r"c.toml:2: settings.persist: must be a number of seconds"),
        ('[settings]\npersist = "10m"\n', r"settings.persist: must be a number of seconds, 0 or"),
        ("[settings]\npersist = true\n", r"settings.persist: must be a number of seconds"),
        ("[hosts\n", r"invalid TOML"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_config(text, tmp_path / "c.toml")


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("2", 2.0), ("90.5", 90.5)])
def test_persist_is_seconds(tmp_path: Path, value: str, seconds: float) -> None:
    config = parse_config(f"[settings]\npersist = {value}\n", tmp_path / "c.toml")
    assert config.settings.persist == seconds
    assert parse_config("", tmp_path / "c.toml").settings.persist == 600.0


def test_config_path_resolution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_dirs: Path
) -> None:
    assert resolve_config_path(None) is None
    lab = isolated_dirs / "config" / "bastionctl" / "lab.toml"
    lab.parent.mkdir(parents=True)
    lab.write_text("")
    assert resolve_config_path(None) == lab
    user = lab.parent / "config.toml"
    user.write_text("")
    assert resolve_config_path(None) == user
    env = tmp_path / "env.toml"
    env.write_text("")
    monkeypatch.setenv("BASTIONCTL_CONFIG", str(env))
    assert resolve_config_path(None) == env
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("")
    assert resolve_config_path(explicit) == explicit
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config_path(tmp_path / "missing.toml")


ZONED = '[bastions.b]\nuser = "a"\n{key} = "{value}"\n'
HOSTILE_ZONE = r"fe80::1%x\nHost *\n  ProxyCommand sh -c id>pwned"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ZONED.format(key="ipv6", value=HOSTILE_ZONE), r"c.toml:3: bastions.b.ipv6: has a zone id"),
        (
            ZONED.format(key="hostname", value=HOSTILE_ZONE),
            r"c.toml:3: bastions.b.hostname: has a zone id",
        ),
        (ZONED.format(key="ipv6", value="fe80::1%eth0 x"), r"c.toml:3: bastions.b.ipv6"),
        (ZONED.format(key="ipv6", value="fe80::1%abcdefghijklmnop"), r"bastions.b.ipv6: has a"),
        ('[settings]\nbind = "fe80::1%a;b"\n', r"c.toml:2: settings.bind: has a zone id"),
        (
            '[settings]\ndns_servers = ["[fe80::1%a b]:53"]\n',
            r"c.toml:2: settings.dns_servers: has a zone id",
        ),
        (
            '[bastions.b]\nuser = "a"\nipv4 = "192.0.2.1"\nhost_key_alias = "*.example.com"\n',
            r"c.toml:4: bastions.b.host_key_alias: must be a host name or address",
        ),
        (
            '[bastions.b]\nuser = "a"\nipv4 = "192.0.2.1"\nhost_key_alias = "gw%h"\n',
            r"c.toml:4: bastions.b.host_key_alias",
        ),
    ],
)
def test_zone_ids_and_host_key_aliases_are_checked(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected) as error:
        parse_config(text, tmp_path / "c.toml")
    assert "\n" not in str(error.value)  # the value is shown escaped, on one line


def test_interface_zone_ids_and_host_key_aliases_are_accepted(tmp_path: Path) -> None:
    text = (
        '[settings]\nbind = "fe80::1%lo"\ndns_servers = ["[fe80::53%eth0.100]:53"]\n'
        '[bastions.b]\nuser = "a"\nipv6 = "FE80::1%br-lan_1"\nhost_key_alias = "Gate.Example.COM"\n'
        '[hosts.h]\nuser = "u"\nhostname = "fe80::2%12"\nport = 2222\n'
        'host_key_alias = "[gate.example.com]:2222"\n'
    )
    config = parse_config(text, tmp_path / "c.toml")
    bastion = config.inventory.bastions["b"]
    assert bastion.ipv6 == "fe80::1%br-lan_1" and bastion.host_key_alias == "gate.example.com"
    host = config.inventory.hosts["h"]
    assert host.connect_host == "fe80::2%12"
    assert host.host_key_alias == "[gate.example.com]:2222"
    assert config.settings.bind == "fe80::1%lo"
