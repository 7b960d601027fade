"""cloud-init's host key blocks in console output: real keys in, only a complete, consistent last
block out; everything else pins nothing and says why."""

from __future__ import annotations

import base64
import hashlib

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bastionctl.inventory import console_keys
from bastionctl.inventory.console_keys import console_text, parse


def _openssh(private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


ED = _openssh(ed25519.Ed25519PrivateKey.generate())
ECDSA = _openssh(ec.generate_private_key(ec.SECP256R1()))
RSA = "ssh-rsa " + paramiko.RSAKey.generate(1024).get_base64()
OTHER_ED = _openssh(ed25519.Ed25519PrivateKey.generate())


def _sha(line: str) -> str:
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _md5(line: str) -> str:
    digest = hashlib.md5(base64.b64decode(line.split()[1])).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


def _fp_line(line: str, label: str, md5: bool = False) -> str:
    fp = f"MD5:{_md5(line)}" if md5 else _sha(line)
    return f"256 {fp} root@ip-10-0-0-5 ({label})"


def boot(keys: list[str], fps: list[str] | None, prefix: str = "", noise: bool = True) -> str:
    """One boot's console output as cloud-init on Amazon Linux (prefix 'ec2: ') prints it."""
    out = ["[    0.000000] Linux version 6.1.0", "Cloud-init v. 23.4 running 'modules:final'"]
    if fps is not None:
        out += [f"{prefix}{'#' * 61}", f"{prefix}{console_keys.FPS_BEGIN}"]
        out += [f"{prefix}{f}" for f in fps]
        out += [f"{prefix}{console_keys.FPS_END}", f"{prefix}{'#' * 61}"]
    out.append(f"{prefix}{console_keys.KEYS_BEGIN}")
    for key in keys:
        out.append(f"{prefix}{key} root@ip-10-0-0-5")
        if noise:
            out.append("[   12.345678] random: crng init done")
    out.append(f"{prefix}{console_keys.KEYS_END}")
    out.append("Cloud-init v. 23.4 finished")
    return "\n".join(out) + "\n"


def _types(text: str) -> list[str]:
    return [k.key_type for k in parse(text).keys]


def test_amazon_linux_block_with_ec2_prefix_and_fingerprints() -> None:
    text = boot(
        [ECDSA, ED, RSA],
        [_fp_line(ECDSA, "ECDSA"), _fp_line(ED, "ED25519"), _fp_line(RSA, "RSA")],
        prefix="ec2: ",
    )
    result = parse(text)
    assert result.problem is None and result.found and result.cross_checked
    assert [k.key_type for k in result.keys] == ["ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"]
    assert result.keys[1].sha256 == _sha(ED)


def test_crlf() -> None:
    text = boot([ED], [_fp_line(ED, "ED25519")]).replace("\n", "\r\n")
    assert _types(console_text(text)) == ["ssh-ed25519"]
    assert console_text(None) == ""
    with pytest.raises(ValueError, match="not text"):
        console_text(b"bytes")


def test_old_images_md5_fingerprints_and_dsa_listed_only_as_a_fingerprint() -> None:
    fps = [_fp_line(RSA, "RSA", md5=True), "1024 MD5:" + ":".join(["ab"] * 16) + " x (DSA)"]
    result = parse(boot([RSA], fps))
    assert result.problem is None and result.cross_checked
    bare = [_fp_line(RSA, "RSA", md5=True).replace("MD5:", "")]
    assert parse(boot([RSA], bare)).cross_checked


def test_two_boots_take_the_last_block() -> None:
    text = boot([OTHER_ED], [_fp_line(OTHER_ED, "ED25519")]) + boot([ED], [_fp_line(ED, "ED25519")])
    assert [k.sha256 for k in parse(text).keys] == [_sha(ED)]


def test_a_later_boot_cut_off_pins_nothing() -> None:
    second = boot([ED], [_fp_line(ED, "ED25519")])
    cut = second[: second.index(ED[20:40])]
    result = parse(boot([OTHER_ED], None) + cut)
    assert result.keys == [] and result.problem is not None and "cut off" in result.problem


def test_a_truncated_key_pins_nothing() -> None:
    text = boot([ED, ECDSA[:60]], None)
    result = parse(text)
    assert result.keys == []
    assert result.problem is not None and "ecdsa-sha2-nistp256" in result.problem


def test_a_fingerprint_that_matches_no_key_pins_nothing() -> None:
    result = parse(boot([ED, ECDSA], [_fp_line(OTHER_ED, "ED25519"), _fp_line(ECDSA, "ECDSA")]))
    assert result.keys == []
    assert result.problem is not None and _sha(OTHER_ED) in result.problem


def test_a_key_the_fingerprints_leave_out_pins_nothing() -> None:
    result = parse(boot([ED, OTHER_ED], [_fp_line(ED, "ED25519")]))
    assert result.keys == [] and result.problem is not None and _sha(OTHER_ED) in result.problem


def test_a_key_of_another_type_under_a_name_pins_nothing() -> None:
    blob = ED.split()[1]
    result = parse(boot([f"ssh-rsa {blob}"], None))
    assert result.keys == [] and result.problem is not None and "does not parse" in result.problem


def test_junk_key_types_are_skipped_with_a_note() -> None:
    result = parse(boot([ED, "ssh-dss AAAAB3NzaC1kc3M=", "evil-\x1b[31m AAAA"], None))
    assert _types(boot([ED], None)) == ["ssh-ed25519"]
    assert [k.key_type for k in result.keys] == ["ssh-ed25519"]
    assert result.notes == ["a ssh-dss key was skipped (not a type bastionctl pins)"]
    only_junk = parse(boot(["ssh-dss AAAAB3NzaC1kc3M="], None))
    assert only_junk.keys == [] and only_junk.problem is not None


def test_no_block_is_not_a_problem() -> None:
    result = parse("Linux version 6.1\nlogin: \n")
    assert not result.found and result.keys == [] and result.problem is None


def test_huge_input_is_bounded() -> None:
    junk = ("A" * 10_000 + "\n") * 300  # 3 MB of noise before the block
    assert _types(junk + boot([ED], None)) == ["ssh-ed25519"]
    huge_line = boot(["ssh-ed25519 " + "A" * 100_000], None)
    assert parse(huge_line).problem == "a line of the key block is too long"
    too_many = [_openssh(ed25519.Ed25519PrivateKey.generate()) for _ in range(20)]
    assert "more than" in (parse(boot(too_many, None, noise=False)).problem or "")
    assert len(console_text("A" * (console_keys.MAX_OUTPUT * 2))) == console_keys.MAX_OUTPUT


def test_rdp_thumbprint_the_last_valid_one() -> None:
    thumb = "0123456789abcdef0123456789ABCDEF01234567"
    text = f"2024/01/01 RDPCERTIFICATE-THUMBPRINT: {'f' * 40}\nRDPCERTIFICATE-THUMBPRINT: {thumb}\n"
    assert parse(text).rdp_thumbprint == thumb.upper()
    assert parse("RDPCERTIFICATE-THUMBPRINT: zz\n").rdp_thumbprint is None
