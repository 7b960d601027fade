"""Host keys against real (in-process) SSH servers: only the address connected to, or the
config's host_key_alias, vouches for a key; never a name that EC2 tags choose (the alias, the
fqdn). @revoked is honoured, @cert-authority and malformed lines are skipped."""

from __future__ import annotations

import logging
from pathlib import Path

import paramiko
import pytest

from bastionctl.config import load_config
from bastionctl.errors import HostKeyError
from bastionctl.ssh.connect import connect_bastion, connect_through
from bastionctl.ssh.hostkeys import fingerprint
from tests.lab.helpers import run_cli
from tests.ssh.helpers import make_session
from tests.ssh.server import KBD, PUBLICKEY, new_ed25519, public_line
from tests.ssh.services import free_port
from tests.ssh.world import BASTION, World

FQDN = "server-01.example.test"  # as a bastionctl:fqdn tag would set it


def _config(
    world: World, tmp_path: Path, known: list[str], bastion_extra: str = "", host_extra: str = ""
) -> Path:
    """The bulk user's config with `known` as its known_hosts, extra lines in the bastion's
    (and server-02's) table; the secret stored."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("\n".join(known) + "\n")
    text = world.config_text("bulk", known_hosts=known_hosts)
    text = text.replace(f"[bastions.{BASTION}]\n", f"[bastions.{BASTION}]\n{bastion_extra}", 1)
    text = text.replace("[hosts.server-02]\n", f"[hosts.server-02]\n{host_extra}", 1)
    path = tmp_path / "c.toml"
    path.write_text(text)
    world.store_secret("bulk")
    return path


def _bastion_key(world: World) -> str:
    return public_line(world.bastion.host_key)


def _attempts(world: World) -> int:
    return world.bastion.attempts(PUBLICKEY) + world.bastion.attempts(KBD)


def _login(config_path: Path, tmp_path: Path) -> paramiko.Transport:
    config = load_config(config_path)
    session = make_session(config, tmp_path)
    return connect_bastion(config.inventory.bastions[BASTION], session)


def test_a_key_known_only_under_tag_chosen_names_is_refused(
    ssh_world: World, tmp_path: Path
) -> None:
    port = ssh_world.bastion.port
    names = [BASTION, FQDN, f"[{BASTION}]:{port}", f"[{FQDN}]:{port}"]
    config = _config(
        ssh_world, tmp_path, [f"{','.join(names)} {_bastion_key(ssh_world)}"], f'fqdn = "{FQDN}"\n'
    )
    before = _attempts(ssh_world)
    with pytest.raises(HostKeyError) as refused:
        _login(config, tmp_path)
    message = str(refused.value)
    assert message.startswith(f"unknown host key for {BASTION} ([127.0.0.1]:{port}): ")
    assert fingerprint(ssh_world.bastion.host_key) in message
    assert f"ssh-keyscan -t ed25519 -p {port} 127.0.0.1`" in message
    assert _attempts(ssh_world) == before  # nothing was sent


def test_a_target_known_only_under_its_alias_is_refused(ssh_world: World, tmp_path: Path) -> None:
    target = ssh_world.targets["server-02"]
    known = [
        ssh_world.bastion.known_hosts_line(),
        f"server-02,[server-02]:{target.port} {public_line(target.host_key)}",
    ]
    config_path = _config(ssh_world, tmp_path, known)
    config = load_config(config_path)
    session = make_session(config, tmp_path)
    bastion = connect_bastion(config.inventory.bastions[BASTION], session)
    try:
        before = target.attempts(PUBLICKEY)
        with pytest.raises(
            HostKeyError,
            match=rf"unknown host key for server-02 \(\[127\.0\.0\.1\]:{target.port}\)",
        ):
            connect_through(
                bastion,
                config.inventory.bastions[BASTION],
                config.inventory.hosts["server-02"],
                session,
            )
        assert target.attempts(PUBLICKEY) == before
    finally:
        bastion.close()


def test_the_configs_host_key_alias_vouches_for_the_key(ssh_world: World, tmp_path: Path) -> None:
    target = ssh_world.targets["server-02"]
    known = [
        f"gate.example.test {_bastion_key(ssh_world)}",
        f"[web-key]:22 {public_line(target.host_key)}",
    ]
    config_path = _config(
        ssh_world,
        tmp_path,
        known,
        'host_key_alias = "Gate.Example.Test"\n',
        'host_key_alias = "[web-key]:22"\n',
    )
    config = load_config(config_path)
    session = make_session(config, tmp_path)
    bastion = connect_bastion(config.inventory.bastions[BASTION], session)
    try:
        assert bastion.is_authenticated()
        host = connect_through(
            bastion,
            config.inventory.bastions[BASTION],
            config.inventory.hosts["server-02"],
            session,
        )
        assert host.is_authenticated()
        host.close()
    finally:
        bastion.close()


def test_a_revoked_key_is_refused_with_file_and_line(ssh_world: World, tmp_path: Path) -> None:
    known = [
        ssh_world.bastion.known_hosts_line(),
        "# revoked after the incident",
        f"@revoked * {_bastion_key(ssh_world)}",
    ]
    config = _config(ssh_world, tmp_path, known)
    before = _attempts(ssh_world)
    with pytest.raises(HostKeyError) as refused:
        _login(config, tmp_path)
    assert str(refused.value).startswith(
        f"the host key {fingerprint(ssh_world.bastion.host_key)} of {BASTION} "
        f"([127.0.0.1]:{ssh_world.bastion.port}) is revoked in {tmp_path / 'known_hosts'}:3; "
        "refusing"
    )
    assert _attempts(ssh_world) == before
    # The command line says so in one line, exit 1, no traceback.
    result = run_cli(
        "--config", str(config), "tunnel", "echo", "server-02", "--local-port", str(free_port())
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("bastionctl: error")]
    assert len(errors) == 1 and "known_hosts:3; refusing" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def test_cert_authority_and_malformed_lines_are_skipped(
    ssh_world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = public_line(new_ed25519()[0])
    known = [
        f"@cert-authority *.example.test,[127.0.0.1]:* {ca}",
        "[127.0.0.1]:1 ssh-ed25519",
        "[127.0.0.1]:1 ssh-ed25519 !!!notbase64!!!",
        "@unknown-marker * ssh-ed25519 AAAA",
        ssh_world.bastion.known_hosts_line(),
    ]
    config = _config(ssh_world, tmp_path, known)
    with caplog.at_level(logging.DEBUG, logger="bastionctl.ssh.hostkeys"):
        transport = _login(config, tmp_path)
    try:
        assert transport.is_authenticated()
    finally:
        transport.close()
    path = tmp_path / "known_hosts"
    assert f"{path}:1: @cert-authority line skipped" in caplog.text
    for line in (2, 3, 4):
        assert f"{path}:{line}: skipped" in caplog.text
