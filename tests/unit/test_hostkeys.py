from __future__ import annotations

import logging
from pathlib import Path

import paramiko
import pytest

from bastionctl.errors import HostKeyError
from bastionctl.ssh.hostkeys import KnownHosts, fingerprint


def _key() -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key(_gen())  # type: ignore[no-any-return]


def _gen():  # type: ignore[no-untyped-def]
    import io

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return io.StringIO(pem.decode())


def test_known_key_passes_unknown_and_changed_are_refused(tmp_path: Path) -> None:
    known, other = _key(), _key()
    path = tmp_path / "known_hosts"
    path.write_text(f"server-01,2001:db8::1 {known.get_name()} {known.get_base64()}\n")
    hosts = KnownHosts([path])
    hosts.verify("server-01", ["2001:db8::1"], known)
    with pytest.raises(HostKeyError, match="HOST KEY CHANGED") as changed:
        hosts.verify("server-01", ["2001:db8::1"], other)
    assert fingerprint(other) in str(changed.value)
    with pytest.raises(HostKeyError, match="unknown host key") as unknown:
        hosts.verify("server-09", ["2001:db8::9"], other)
    assert fingerprint(other) in str(unknown.value) and "ssh-keyscan" in str(unknown.value)


def test_hashed_entries_and_ports(tmp_path: Path) -> None:
    key = _key()
    entry = paramiko.HostKeys()
    entry.add(paramiko.HostKeys.hash_host("[2001:db8::1]:2222"), key.get_name(), key)
    path = tmp_path / "known_hosts"
    entry.save(str(path))
    KnownHosts([path]).verify("b", ["[2001:db8::1]:2222"], key)
    with pytest.raises(HostKeyError):
        KnownHosts([path]).verify("b", ["2001:db8::1"], key)


def test_missing_file_means_unknown(tmp_path: Path) -> None:
    with pytest.raises(HostKeyError, match="unknown host key"):
        KnownHosts([tmp_path / "none"]).verify("b", ["h"], _key())


# --- what the file may hold: @revoked, @cert-authority, odd lines ---------------------------


def _line(names: str, key: paramiko.PKey, marker: str = "") -> str:
    return f"{marker + ' ' if marker else ''}{names} {key.get_name()} {key.get_base64()}"


def test_a_revoked_key_is_refused_with_its_file_and_line_even_if_also_listed(
    tmp_path: Path,
) -> None:
    key, other = _key(), _key()
    path = tmp_path / "known_hosts"
    path.write_text(
        "# comment\n"
        + _line("[2001:db8::1]:2222", key)
        + "\n"
        + _line("[2001:db8::1]:2222", other)
        + "\n"
        + _line("*", key, "@revoked")
        + "\n"
    )
    hosts = KnownHosts([path])
    with pytest.raises(HostKeyError) as refused:
        hosts.verify("server-01", ["[2001:db8::1]:2222"], key)
    message = str(refused.value)
    assert message.startswith(
        f"the host key {fingerprint(key)} of server-01 ([2001:db8::1]:2222) is revoked in "
        f"{path}:4; refusing"
    )
    assert "\n" not in refused.value.message
    hosts.verify("server-01", ["[2001:db8::1]:2222"], other)  # the other key still counts
    assert hosts.known_types(["[2001:db8::1]:2222"]) == [other.get_name()]


def test_revocation_applies_to_matching_names_only(tmp_path: Path) -> None:
    key = _key()
    path = tmp_path / "known_hosts"
    path.write_text(
        _line("2001:db8::1,2001:db8::2,bastion-key", key)
        + "\n"
        + _line("2001:db8::1,*.example.com,bastion-?ey,!2001:db8::2", key, "@revoked")
        + "\n"
    )
    hosts = KnownHosts([path])
    for revoked in ("2001:db8::1", "bastion-key"):
        with pytest.raises(HostKeyError, match=f"revoked in {path}:2"):
            hosts.verify("b", [revoked], key)
    hosts.verify("b", ["2001:db8::2"], key)  # negated on the @revoked line
    # The address is checked too when the key is looked up under a host_key_alias.
    with pytest.raises(HostKeyError, match="revoked"):
        KnownHosts([path]).verify("b", ["2001:db8::2"], key, address="2001:db8::1")


def test_cert_authority_lines_are_skipped_and_normal_entries_still_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, ca = _key(), _key()
    path = tmp_path / "known_hosts"
    path.write_text(_line("*", ca, "@cert-authority") + "\n" + _line("2001:db8::1", key) + "\n")
    with caplog.at_level(logging.DEBUG, logger="bastionctl.ssh.hostkeys"):
        hosts = KnownHosts([path])
    hosts.verify("b", ["2001:db8::1"], key)
    with pytest.raises(HostKeyError, match="unknown host key"):
        hosts.verify("c", ["2001:db8::9"], ca)  # a CA key vouches for nothing here
    assert f"{path}:1: @cert-authority line skipped" in caplog.text


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("2001:db8::1 ssh-ed25519", "not NAMES KEYTYPE KEY"),
        ("2001:db8::1 ssh-ed25519 not*base64!", "not base64"),
        ("2001:db8::1 ssh-ed25519 AAAAB3NzaC1yc2E=", "does not parse"),
        ("2001:db8::1 sk-ssh-ed25519@openssh.com AAAA", "not one bastionctl reads"),
        ("@marker 2001:db8::1 ssh-ed25519 AAAA", "unknown marker"),
        ("|1|short|hash ssh-ed25519 AAAA", "hashed name"),
        ("|2|AAAA|AAAA ssh-ed25519 AAAA", "hashed name"),
        ("a,,b ssh-ed25519 AAAA", "empty name"),
        ("@revoked", "not NAMES KEYTYPE KEY"),
    ],
)
def test_malformed_lines_are_skipped_with_a_debug_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, line: str, why: str
) -> None:
    key = _key()
    path = tmp_path / "known_hosts"
    path.write_text(line + "\n" + _line("2001:db8::1", key) + "\n\xff\n")
    with caplog.at_level(logging.DEBUG, logger="bastionctl.ssh.hostkeys"):
        hosts = KnownHosts([path])
    hosts.verify("b", ["2001:db8::1"], key)
    assert f"known_hosts {path}:1: skipped: " in caplog.text and why in caplog.text
    assert len(hosts.entries) == 1


def test_names_match_like_openssh_but_wildcards_never_vouch(tmp_path: Path) -> None:
    key = _key()
    path = tmp_path / "known_hosts"
    hashed = paramiko.HostKeys.hash_host("[127.0.0.1]:2200")
    path.write_text(
        "\n".join(
            [
                _line("*", key),
                _line("*.example.com,?.example.org", key),
                _line("Bastion.Example.NET", key),
                _line("2001:db8::5,!2001:db8::5", key),
                f"{hashed}\t{key.get_name()}   {key.get_base64()} a comment",
            ]
        )
        + "\n"
    )
    hosts = KnownHosts([path])
    hosts.verify("b", ["bastion.example.net"], key)  # case-insensitive, as in OpenSSH
    hosts.verify("b", ["[127.0.0.1]:2200"], key)  # hashed, tabs and runs of spaces
    for name in ("anything", "a.example.com", "a.example.org", "2001:db8::5", "127.0.0.1"):
        with pytest.raises(HostKeyError, match="unknown host key"):
            hosts.verify("b", [name], key)


def test_the_names_looked_up_are_the_address_or_the_configs_host_key_alias() -> None:
    from bastionctl.model import Bastion, Host
    from bastionctl.ssh.hostkeys import host_key_names

    tagged = Host(alias="web-1", user="u", ipv6="2001:db8::7", fqdn="bank.example.com", bastion="b")
    assert host_key_names(tagged) == ["2001:db8::7"]  # neither web-1 nor bank.example.com
    assert host_key_names(Bastion(alias="b", user="u", ipv4="192.0.2.1", port=2222)) == [
        "[192.0.2.1]:2222"
    ]
    aliased = Bastion(alias="b", user="u", ipv4="192.0.2.1", port=2222, host_key_alias="gw")
    assert host_key_names(aliased) == ["gw"]  # instead of the address, as OpenSSH does


def test_hints_name_the_address_connected_to(tmp_path: Path) -> None:
    key, other = _key(), _key()
    path = tmp_path / "known_hosts"
    path.write_text(_line("[192.0.2.1]:2222", other) + "\n" + _line("gw", other) + "\n")
    hosts = KnownHosts([path])
    with pytest.raises(HostKeyError) as changed:
        hosts.verify("b", ["[192.0.2.1]:2222"], key, "[192.0.2.1]:2222")
    assert f"`ssh-keygen -f {path} -R [192.0.2.1]:2222`" in str(changed.value)
    assert f"({path}:1, an entry of your own)" in str(changed.value)
    with pytest.raises(HostKeyError) as aliased:
        hosts.verify("b", ["gw"], key, "[192.0.2.1]:2222")
    assert f"`ssh-keygen -f {path} -R gw`" in str(aliased.value)
    with pytest.raises(HostKeyError) as unknown:
        KnownHosts([path]).verify("b", ["gw2"], key, "[192.0.2.1]:2222")
    hint = str(unknown.value)
    assert "ssh-keyscan -t ed25519 -p 2222 192.0.2.1 | awk '{print \"gw2\", $2, $3}'" in hint


def test_a_changed_key_names_where_a_pinned_key_came_from(tmp_path: Path) -> None:
    key, old = _key(), _key()
    path = tmp_path / "known_hosts"
    comment = "# bastionctl ec2-console 2024-05-01T12:00:00Z alias=app-02 instance=i-0abc"
    path.write_text(f"# header\n{comment}\n{_line('[192.0.2.9]:2222', old)}\n")
    with pytest.raises(HostKeyError) as changed:
        KnownHosts([path]).verify("app-02", ["[192.0.2.9]:2222"], key, "[192.0.2.9]:2222")
    message = str(changed.value)
    assert (
        f"({path}:3, pinned from EC2's console output of i-0abc on 2024-05-01T12:00:00Z) has "
        f"{fingerprint(old)}, the server offered {fingerprint(key)}"
    ) in message
    assert "`bastionctl known-hosts sync` pins the keys EC2 attests now" in message


def test_the_doctor_looks_keys_up_as_the_login_does(tmp_path: Path) -> None:
    from bastionctl.config import parse_config
    from bastionctl.doctor import Status, local_checks

    key = _key()
    known = tmp_path / "known_hosts"
    table = '[bastions.server-01]\nuser = "op"\nipv4 = "192.0.2.1"\nfqdn = "gw.example.com"\n'
    text = f'[settings]\nknown_hosts = ["{known}"]\n{table}'

    class NoSecrets:
        def get(self, _alias: str) -> None:
            return None

    def status(config_text: str, known_text: str) -> tuple[Status, str]:
        known.write_text(known_text)
        config = parse_config(config_text, tmp_path / "c.toml")
        checks = local_checks(config.inventory.bastions["server-01"], config, NoSecrets())
        [check] = [c for c in checks if c.check == "known_hosts"]
        return check.status, check.detail

    # Under the alias or the fqdn only (names EC2 tags may choose): not known.
    assert status(text, _line("server-01,gw.example.com", key) + "\n") == (
        Status.FAIL,
        "no host key for 192.0.2.1",
    )
    assert status(text, _line("192.0.2.1", key) + "\n")[0] is Status.OK
    aliased = text + 'host_key_alias = "gate"\n'
    assert status(aliased, _line("gate", key) + "\n") == (
        Status.OK,
        "host key known for gate (host_key_alias of 192.0.2.1)",
    )
    assert status(aliased, _line("192.0.2.1", key) + "\n")[0] is Status.FAIL
