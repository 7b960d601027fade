"""Who logs in: the lab's own Unix accounts, TOTP files, client keys, host keys, known_hosts.

The accounts exist only inside the lab. `ip netns exec NS` (how every lab daemon starts)
runs in a mount namespace of its own where each file of /etc/netns/NS/ is bind-mounted over
its namesake in /etc/, so each lab namespace gets passwd and group files (the host's entries
plus the lab's) and a shadow file with the lab's entries only. The host's account files are
never written, and the lab's files are owned by numeric ids no host account has."""

from __future__ import annotations

import os
import pwd
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pyotp

from bastionctl.errors import LabError

from . import configs, system
from .spec import BASTION, DOMAIN, TARGETS, LabSpec
from .system import LINUX_ONLY

# Below the ids systemd hands out (61184-65519) and above most sites' people; each lab
# takes the first free ids from its own slot.
ID_BASE = 58000
ID_SLOT = 8


@dataclass(frozen=True)
class LabAccount:
    name: str
    uid: int  # also the gid of its group of the same name
    home: Path


def _ids_in(path: Path) -> set[int]:
    ids = set()
    for line in path.read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isdigit():
            ids.add(int(fields[2]))
    return ids


def lab_accounts(spec: LabSpec) -> list[LabAccount]:
    """The op and bulk users with ids that neither /etc/passwd nor /etc/group uses."""
    taken = _ids_in(Path("/etc/passwd")) | _ids_in(Path("/etc/group"))
    free = (n for n in range(ID_BASE + ID_SLOT * spec.net_id, 60000) if n not in taken)
    accounts = []
    for user in (spec.op_user, spec.bulk_user):
        uid = next(free, None)
        if uid is None:
            raise LabError(f"no free user id from {ID_BASE} to 59999 for the lab's accounts")
        accounts.append(LabAccount(user, uid, spec.root / "home" / user))
    return accounts


def netns_etc_dirs(spec: LabSpec) -> list[Path]:
    """/etc/netns/NS of every lab namespace: what `ip netns exec NS` mounts over /etc."""
    names = (spec.bastion_ns, *(spec.target_ns(t) for t in TARGETS))
    return [Path("/etc/netns") / ns for ns in names]


def _write_like(source: str, lines: list[str], target: Path, keep: bool) -> None:
    """`lines` (after /etc/`source`'s own when `keep`) at `target`, with its mode and owner."""
    if sys.platform != "linux":
        raise LabError(LINUX_ONLY)
    original = Path("/etc") / source
    text = original.read_text() if keep else ""
    if text and not text.endswith("\n"):
        text += "\n"
    target.write_text(text + "".join(f"{line}\n" for line in lines))
    shutil.copymode(original, target)
    st = original.stat()
    os.chown(target, st.st_uid, st.st_gid)


def write_account_files(spec: LabSpec, accounts: list[LabAccount]) -> None:
    users = [f"{a.name}:x:{a.uid}:{a.uid}:bastionctl lab:{a.home}:/bin/sh" for a in accounts]
    groups = [f"{a.name}:x:{a.uid}:" for a in accounts]
    # "*" rather than "!": OpenSSH treats "!" as locked when UsePAM is off. No host entry
    # (and so no host password hash) is copied: only the lab's users log in here.
    shadow = [f"{a.name}:*:19000:0:99999:7:::" for a in accounts]
    for etc in netns_etc_dirs(spec):
        etc.mkdir(parents=True, exist_ok=True)
        _write_like("passwd", users, etc / "passwd", keep=True)
        _write_like("group", groups, etc / "group", keep=True)
        _write_like("shadow", shadow, etc / "shadow", keep=False)


def create_users(spec: LabSpec) -> list[LabAccount]:
    if sys.platform != "linux":
        raise LabError(LINUX_ONLY)
    accounts = lab_accounts(spec)
    write_account_files(spec, accounts)
    for account, defaults in zip(accounts, (True, False), strict=True):
        home = account.home
        home.mkdir(mode=0o700, exist_ok=True)
        os.chown(home, account.uid, account.uid)
        secret = pyotp.random_base32(32)
        path = home / ".google_authenticator"
        path.write_text(configs.totp_file(secret, defaults))
        os.chown(path, account.uid, account.uid)
        path.chmod(0o400)
    return accounts


def legacy_host_user(spec: LabSpec, user: str) -> bool:
    """A host account an older `lab up` added with useradd (its home is the lab's)."""
    if sys.platform != "linux":
        raise LabError(LINUX_ONLY)
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return False
    return entry.pw_dir == str(spec.root / "home" / user)


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
