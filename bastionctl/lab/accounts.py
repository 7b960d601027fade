"""Who logs in: Unix users with TOTP files, client keys, host keys and known_hosts."""

from __future__ import annotations

import os
import pwd
import sys
from pathlib import Path

import pyotp

from bastionctl.errors import LabError

from . import configs, system
from .spec import BASTION, DOMAIN, TARGETS, LabSpec
from .system import LINUX_ONLY


def user_exists(user: str) -> bool:
    if sys.platform != "linux":
        raise LabError(LINUX_ONLY)
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def create_users(spec: LabSpec) -> None:
    if sys.platform != "linux":
        raise LabError(LINUX_ONLY)
    for user, defaults in ((spec.op_user, True), (spec.bulk_user, False)):
        home = spec.root / "home" / user
        if not user_exists(user):
            system.run(
                "useradd",
                "--system",
                "--shell",
                "/bin/sh",
                "--home-dir",
                str(home),
                "--no-create-home",
                user,
            )
        # "*" rather than the default "!": OpenSSH treats "!" as locked when UsePAM is off.
        system.run("usermod", "-p", "*", user)
        entry = pwd.getpwnam(user)
        home.mkdir(mode=0o700, exist_ok=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        secret = pyotp.random_base32(32)
        path = home / ".google_authenticator"
        path.write_text(configs.totp_file(secret, defaults))
        os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(0o400)


def create_keys(spec: LabSpec) -> dict[str, Path]:
    client: dict[str, Path] = {}
    known: list[str] = []
    for alias in (BASTION, *(t.alias for t in TARGETS)):
        host_dir = spec.root / "hosts" / alias
        host_dir.mkdir(mode=0o755, exist_ok=True)
        host_key = host_dir / "ssh_host_ed25519_key"
        system.run(
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            f"{alias} host",
            "-f",
            str(host_key),
        )
        key = spec.root / "client" / alias
        system.run(
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            f"lab operator@{alias}",
            "-f",
            str(key),
        )
        key.chmod(0o600)
        client[alias] = key
        keys_dir = host_dir / "authorized_keys"
        keys_dir.mkdir(mode=0o755, exist_ok=True)
        for user in (spec.op_user, spec.bulk_user):
            target = keys_dir / user
            target.write_text(key.with_suffix(".pub").read_text())
            target.chmod(0o644)
        public = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
        if alias == BASTION:
            names = [alias, f"{alias}.{DOMAIN}", spec.public6(2), spec.public4(2)]
            known.append(f"{','.join(names)} {public}")
            known.append(f"{','.join(f'[{n}]:2222' for n in names)} {public}")
        else:
            index = next(t.index for t in TARGETS if t.alias == alias)
            known.append(f"{alias},{alias}.{DOMAIN},{spec.private6(index)} {public}")
    (spec.root / "client" / "known_hosts").write_text("\n".join(known) + "\n")
    return client
