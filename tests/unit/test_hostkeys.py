from __future__ import annotations

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
