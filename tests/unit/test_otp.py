from __future__ import annotations

import threading
from pathlib import Path

import pyotp
import pytest

from bastionctl.errors import UsageError
from bastionctl.otp import (
    OtpSecret,
    SecretStore,
    TotpSource,
    UsedSteps,
    looks_like_totp_prompt,
    parse_secret,
)

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def test_parse_base32_and_uri() -> None:
    assert parse_secret("jbsw y3dp ehpk 3pxp jbsw y3dp ehpk 3pxp\n").secret == SECRET
    uri = f"otpauth://totp/ACME:alice?secret={SECRET}&issuer=ACME&digits=8&period=60"
    parsed = parse_secret(uri)
    assert (parsed.secret, parsed.digits, parsed.interval) == (SECRET, 8, 60)
    assert parse_secret(parsed.serialise()) == parsed
    assert parse_secret(SECRET).serialise() == SECRET


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not base32!",
        "ABC",
        "otpauth://hotp/x?secret=" + SECRET,
        "otpauth://totp/x?digits=6",
        f"otpauth://totp/x?secret={SECRET}&algorithm=MD5",
    ],
)
def test_bad_secrets_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_secret(bad)
    if bad:
        assert bad not in str(info.value)


def test_secret_never_in_repr() -> None:
    assert SECRET not in repr(parse_secret(SECRET))


def test_codes_match_pyotp() -> None:
    secret = parse_secret(SECRET)
    assert secret.code(secret.step(1_700_000_000)) == pyotp.TOTP(SECRET).at(1_700_000_000)


HOST_KEY_QUESTION = (
    "The authenticity of host 'token-db.corp.example (2001:db8::5)' can't be established.\n"
    "ED25519 key fingerprint is SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU.\n"
    "This key is not known by any other names.\n"
    "Are you sure you want to continue connecting (yes/no/[fingerprint])? "
)


@pytest.mark.parametrize(
    ("prompt", "custom", "expected"),
    [
        ("Verification code: ", None, True),
        ("Verification code:", None, True),
        ("(bulk@server-01) Verification code: ", None, True),
        ("(op@2001:db8::1) Verification code:", None, True),
        # Anchored: the words somewhere in a prompt are not enough.
        ("Your verification code: ", None, False),
        ("Verification code: (or the recovery key)", None, False),
        ("(bulk@server-01)Verification code: ", None, False),
        ("Enter your OTP:", None, False),
        ("Duo two-factor passcode", None, False),
        ("token", None, False),
        ("mfa 2fa", None, False),
        ("Password: ", None, False),
        ("Username:", None, False),
        (HOST_KEY_QUESTION, None, False),
        # The config's regex, matched whole, with or without OpenSSH's prefix.
        ("Enter your OTP:", r"Enter your OTP:", True),
        ("(op@b) Enter your OTP: ", r"Enter your OTP:", True),
        ("Enter your OTP: now", r"Enter your OTP:", False),
        ("Duo two-factor passcode", r"Duo .* passcode", True),
        ("Verification code: ", r"Token:", True),
        # A yes/no question never, whatever the regex says.
        (HOST_KEY_QUESTION, r"(?s).*", False),
        ("Continue? (yes/no)? ", r".*", False),
    ],
)
def test_totp_prompt_detection(prompt: str, custom: str | None, expected: bool) -> None:
    assert looks_like_totp_prompt(prompt, custom) is expected


def test_used_steps_are_shared_and_monotonic(tmp_path: Path) -> None:
    path = tmp_path / "steps.json"
    assert UsedSteps(path).claim("b", 10)
    assert not UsedSteps(path).claim("b", 10)
    assert not UsedSteps(path).claim("b", 9)
    assert UsedSteps(path).claim("b", 11)
    assert UsedSteps(path).claim("other", 11)
    assert path.stat().st_mode & 0o777 == 0o600
    assert SECRET not in path.read_text()


def test_used_steps_survive_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "steps.json"
    path.write_text("{nope")
    assert UsedSteps(path).claim("b", 1)


def test_concurrent_claims_hand_out_a_step_once(tmp_path: Path) -> None:
    used = UsedSteps(tmp_path / "steps.json")
    wins: list[bool] = []
    threads = [threading.Thread(target=lambda: wins.append(used.claim("b", 5))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1


def test_source_waits_for_a_fresh_step_instead_of_reusing(tmp_path: Path) -> None:
    secret = OtpSecret(SECRET)
    used = UsedSteps(tmp_path / "steps.json")
    used.claim("b", secret.step())
    messages: list[str] = []
    slept: list[float] = []
    clock = {"offset": 0.0}

    class Shifted(OtpSecret):
        def step(self, now: float | None = None) -> int:
            return super().step() + int(clock["offset"] > 0)

    def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock["offset"] += seconds

    source = TotpSource("b", Shifted(SECRET), used, True, messages.append, fake_sleep)
    code = source.next_code()
    assert len(slept) == 1 and 0 < slept[0] <= 30.5
    assert "already used" in messages[0] and "waiting" in messages[0]
    assert code == secret.code(secret.step() + 1)


def test_source_without_single_use_does_not_wait(tmp_path: Path) -> None:
    used = UsedSteps(tmp_path / "steps.json")
    secret = OtpSecret(SECRET)
    used.claim("b", secret.step())
    source = TotpSource("b", secret, used, False, sleep=lambda s: pytest.fail("slept"))
    assert source.next_code() == secret.code(secret.step())


def test_keyring_round_trip() -> None:
    store = SecretStore()
    assert store.get("server-01") is None
    store.set("server-01", parse_secret(SECRET))
    assert store.get("server-01") == parse_secret(SECRET)
    assert store.delete("server-01")
    assert not store.delete("server-01")
    assert store.get("server-01") is None


def test_no_keyring_backend_is_one_clear_error_and_login_falls_back_to_asking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import subprocess
    import sys

    from bastionctl.config import Settings
    from bastionctl.model import Bastion
    from bastionctl.ssh.connect import Session

    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    example = Path(__file__).resolve().parents[2] / "bastionctl" / "templates" / "example.toml"
    result = subprocess.run(
        [sys.executable, "-m", "bastionctl", "--config", str(example), "otp", "set", "server-01"],
        input=SECRET,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("bastionctl: error: cannot store the TOTP secret: no keyring")
    assert len(result.stderr.splitlines()) == 1 and SECRET not in result.stderr

    import keyring
    from keyring.backends import fail

    monkeypatch.setattr(keyring, "get_keyring", lambda: fail.Keyring())
    monkeypatch.setattr(keyring.core, "_keyring_backend", fail.Keyring())
    notes: list[str] = []
    session = Session(Settings(known_hosts=()), ask=lambda p, e: "", notify=notes.append)
    assert session.totp_for(Bastion(alias="server-01", user="u", ipv6="::1")) is None
    assert "no keyring backend" in notes[0] and "asking for the code" in notes[0]


@pytest.mark.parametrize(("view", "words"), [(None, "keyrings.alt"), ("darwin", "macOS Keychain")])
def test_otp_status_without_a_keyring_backend_exits_1_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch, view: str | None, words: str
) -> None:
    import subprocess
    import sys

    from bastionctl.system import api

    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    if view:
        monkeypatch.setenv(api.VIEW_SETTING, view)
    example = Path(__file__).resolve().parents[2] / "bastionctl" / "templates" / "example.toml"
    for extra in ([], ["--json"]):
        result = subprocess.run(
            [sys.executable, "-m", "bastionctl", "--config", str(example), "otp", "status", *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, result
        [line] = result.stderr.splitlines()
        assert line.startswith("bastionctl: error: cannot read the TOTP secret: no keyring backend")
        assert words in line
        if not view:
            assert "gnome-keyring" in line and "plain text" in line
