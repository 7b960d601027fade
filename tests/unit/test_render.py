"""Renderers (pure) checked by the real ssh client, dnsmasq and a zone parser."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import dns.zone
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastionctl.config import load_config
from bastionctl.model import Bastion, Host, Inventory
from bastionctl.render import hosts
from bastionctl.render.ssh_config import Flavour, SshOptions, render

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = load_config(REPO / "bastionctl" / "templates" / "example.toml")


def ssh_g(config_text: str, alias: str, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "ssh_config"
    path.write_text(config_text)
    out = subprocess.run(
        ["ssh", "-G", "-F", str(path), alias], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def test_every_alias_resolves_as_the_inventory_says(tmp_path: Path) -> None:
    rendered = render(EXAMPLE.inventory, SshOptions(), ["example.toml"], EXAMPLE.services)
    assert not rendered.warnings
    inventory = EXAMPLE.inventory
    for endpoint in [*inventory.bastions.values(), *inventory.hosts.values()]:
        options = ssh_g(rendered.text, endpoint.alias, tmp_path)
        assert options["hostname"] == endpoint.connect_host
        assert options["user"] == endpoint.user
        assert options["port"] == str(endpoint.port)
        assert options["identityfile"] == str(endpoint.identity_file)
        if isinstance(endpoint, Host):
            assert options["proxyjump"] == endpoint.bastion
        else:
            assert options["controlmaster"] == "auto" and options["controlpersist"] == "600"


def test_service_hosts_carry_local_forwards(tmp_path: Path) -> None:
    rendered = render(EXAMPLE.inventory, SshOptions(service_hosts=True), [], EXAMPLE.services)
    options = ssh_g(rendered.text, "server-03-rdp", tmp_path)
    assert options["localforward"] == "[127.0.0.1]:53389 [localhost]:3389"
    assert options["hostname"] == "2001:db8::3"


def _hostile_inventory(**fields: str) -> Inventory:
    bastion = Bastion(alias="b", user="op", ipv6="2001:db8::1")
    values = {"alias": "h", "user": "u", "ipv6": "2001:db8::2", "bastion": "b", **fields}
    return Inventory({"b": bastion}, {values["alias"]: Host(**values)})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [
        {"user": "root\n    ProxyCommand touch /tmp/pwned"},
        {"alias": "h ProxyCommand x"},
        {"hostname": "evil.example\r\nProxyCommand x"},
        {"user": 'a"b'},
        {"identity_file": '/k "ey'},
        {"identity_file": "/k ey\n    ProxyCommand x"},
        {"identity_file": "/k\\ey"},  # a backslash only separates in the Windows flavour
        {"identity_file": " /key"},
        {"alias": "h#x"},
        {"bastion": "b\nHost *"},
    ],
)
def test_hostile_values_drop_the_host_with_a_warning(fields: dict[str, str]) -> None:
    if "identity_file" in fields:
        fields = {"identity_file": Path(fields["identity_file"])}  # type: ignore[dict-item]
    rendered = render(_hostile_inventory(**fields), SshOptions(), [])
    assert len(rendered.warnings) == 1
    assert "Host h" not in rendered.text.replace("Host b", "")
    assert "ProxyCommand" not in rendered.text and "pwned" not in rendered.text


DIRECTIVES = {
    "HostName",
    "User",
    "Port",
    "IdentityFile",
    "IdentitiesOnly",
    "ProxyJump",
    "ServerAliveInterval",
    "ServerAliveCountMax",
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    alias=st.text(min_size=1, max_size=20),
    user=st.text(min_size=1, max_size=20),
    hostname=st.text(min_size=1, max_size=30),
    key=st.text(min_size=1, max_size=30) | st.sampled_from(["C:\\a b\\k", "/a b", "a\\b"]),
    flavour=st.sampled_from(Flavour),
)
def test_arbitrary_strings_never_add_a_directive(
    alias: str, user: str, hostname: str, key: str, flavour: Flavour
) -> None:
    inventory = _hostile_inventory(
        alias=alias, user=user, hostname=hostname, identity_file=Path(key)
    )  # type: ignore[arg-type]
    text = render(inventory, SshOptions(), [], flavour=flavour).text
    blocks = text.split("\n\n")[2:]  # header, bastion, then the host if it was kept
    for block in blocks:
        lines = block.strip("\n").splitlines()
        assert lines[0].startswith("Host ") and len(lines[0].split()) == 2
        directives = [line.split()[0] for line in lines[1:]]
        assert set(directives) <= DIRECTIVES and len(directives) == len(set(directives))
        for line in lines[1:]:
            # One argument each; a path with a space is one argument in double quotes.
            assert line.startswith("    ") and len(shlex.split(line)) == 2
            assert "\\" not in line and line.count('"') in (0, 2)


def test_property_sample_is_accepted_by_ssh(tmp_path: Path) -> None:
    for alias, user in (("a.b-c_d", "x_y.z-1"), ("h1", "Administrator")):
        inventory = _hostile_inventory(alias=alias, user=user)
        options = ssh_g(render(inventory, SshOptions(), []).text, alias, tmp_path)
        assert options["user"] == user.lower() or options["user"] == user


def test_hosts_formats_and_external_checkers(tmp_path: Path) -> None:
    inventory = EXAMPLE.inventory
    assert hosts.hosts_file(inventory).splitlines()[1:] == [
        f"{'2001:db8::2':<39} server-02.example.com server-02",
        f"{'2001:db8::3':<39} server-03.example.com server-03",
    ]
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(hosts.dnsmasq(inventory))
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    checked = subprocess.run(
        [dnsmasq, "--test", f"--conf-file={conf}"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    assert "host-record=server-02.example.com,server-02,2001:db8::2" in conf.read_text()
    text = hosts.zone(inventory, "example.com", serial=1)
    zone = dns.zone.from_text(text, origin="example.com.", relativize=False)
    aaaa: dict[str, list[str]] = {}
    for name, _ttl, rdata in zone.iterate_rdatas("AAAA"):
        aaaa.setdefault(str(name), []).append(rdata.address)
    assert aaaa["server-02.example.com."] == ["2001:db8::2"]
    assert aaaa["server-03.example.com."] == ["2001:db8::3"]


CONTROL = ("ControlMaster", "ControlPath", "ControlPersist")
# What ssh -G reports for directives both flavours write (Control* only the POSIX one).
SHARED = (
    "hostname",
    "user",
    "port",
    "identityfile",
    "identitiesonly",
    "proxyjump",
    "userknownhostsfile",
    "serveraliveinterval",
    "serveralivecountmax",
)


def test_both_flavours_from_one_config_differ_only_in_connection_sharing(
    tmp_path: Path,
) -> None:
    options = SshOptions(known_hosts=("/etc/bastionctl/known_hosts",))
    posix = render(EXAMPLE.inventory, options, ["example.toml"], EXAMPLE.services)
    windows = render(
        EXAMPLE.inventory, options, ["example.toml"], EXAMPLE.services, flavour=Flavour.WINDOWS
    )
    assert not posix.warnings and not windows.warnings
    posix_lines = posix.text.splitlines()
    windows_lines = windows.text.splitlines()
    assert not any(line.split()[0] in CONTROL for line in windows_lines if line.strip())
    assert sum(line.split()[0] in CONTROL for line in posix_lines if line.strip()) == 3
    for lines in (posix_lines, windows_lines):
        assert lines.count("    ServerAliveInterval 15") == 3  # bastion and both hosts
        assert lines.count("    ServerAliveCountMax 3") == 3
    # Everything else is the same, line for line (the Windows header has one more line).
    assert [line for line in posix_lines if not line.strip().startswith(CONTROL)] == [
        line for line in windows_lines if "Windows OpenSSH" not in line
    ]
    for endpoint in [*EXAMPLE.inventory.bastions.values(), *EXAMPLE.inventory.hosts.values()]:
        seen_posix = ssh_g(posix.text, endpoint.alias, tmp_path)
        seen_windows = ssh_g(windows.text, endpoint.alias, tmp_path)
        assert {k: seen_posix.get(k) for k in SHARED} == {k: seen_windows.get(k) for k in SHARED}
        assert seen_windows["serveraliveinterval"] == "15"
        assert seen_windows["controlmaster"] == "false"  # ssh's default: nothing set
        if isinstance(endpoint, Bastion):
            assert seen_posix["controlmaster"] == "auto"


# --- zone ids and HostKeyAlias ------------------------------------------------------------------

HOSTILE_ZONE = "fe80::1%x\nHost *\n  ProxyCommand sh -c id>pwned"


@pytest.mark.parametrize(
    "fields",
    [
        {"ipv6": HOSTILE_ZONE},
        {"hostname": HOSTILE_ZONE},
        {"ipv6": "fe80::1%eth0 x"},
        {"host_key_alias": "gw\n    ProxyCommand sh -c id>pwned"},
        {"host_key_alias": "*"},
    ],
)
def test_hostile_zone_ids_and_aliases_drop_the_host(fields: dict[str, str]) -> None:
    rendered = render(_hostile_inventory(**fields), SshOptions(), [])
    assert len(rendered.warnings) == 1 and "\n" not in rendered.warnings[0]
    assert "Host h" not in rendered.text.replace("Host b", "")
    assert "ProxyCommand" not in rendered.text and "pwned" not in rendered.text
    for text in (hosts.hosts_file, hosts.dnsmasq):
        assert "pwned" not in text(_hostile_inventory(**fields), True)
    assert "pwned" not in hosts.zone(_hostile_inventory(**fields), "example.com")


def test_zone_ids_and_host_key_aliases_as_ssh_reads_them(tmp_path: Path) -> None:
    inventory = _hostile_inventory(ipv6="fe80::2%eth0", host_key_alias="gate.example.com")
    rendered = render(inventory, SshOptions(), [])
    assert not rendered.warnings
    assert "    HostName fe80::2%%eth0" in rendered.text.splitlines()  # %% is ssh's literal %
    options = ssh_g(rendered.text, "h", tmp_path)
    assert options["hostname"] == "fe80::2%eth0"
    assert options["hostkeyalias"] == "gate.example.com"
    assert "hostkeyalias" not in ssh_g(rendered.text, "b", tmp_path)  # only where it is set
    # A zone names an interface of this machine: no record for the bastion's hosts or DNS.
    assert "fe80::2" not in hosts.hosts_file(inventory) + hosts.dnsmasq(inventory)
