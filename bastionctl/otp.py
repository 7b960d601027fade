"""TOTP secrets in the OS keyring, codes from pyotp, and the one-code-per-step rule.

A google-authenticator bastion rejects a code already used in its 30 s step with the same
answer as a wrong code, and counts every attempt against its rate limit. So each code that
bastionctl sends is recorded (the step number only, never the code) and the next login waits
for a fresh step instead of sending it again.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from bastionctl import paths
from bastionctl.errors import SecretStoreError, UsageError
from bastionctl.system.files import private_dir
from bastionctl.system.locks import file_lock

KEYRING_SERVICE = "bastionctl"
# The TOTP prompt answered without configuration: google-authenticator's PAM module's.
TOTP_PROMPT = "Verification code:"
# How OpenSSH shows a keyboard-interactive prompt (to SSH_ASKPASS too): "(user@host) PROMPT".
OPENSSH_PREFIX = re.compile(r"\((?P<user>[^@()\s]+)@(?P<host>[^()\s]+)\) ")
# A yes/no question (OpenSSH's host-key question ends so) is never answered with a code.
YES_NO_RE = re.compile(r"\(yes/no(?:/\[fingerprint\])?\)\? *\Z")
ALGORITHMS = ("SHA1", "SHA256", "SHA512")


@dataclass(frozen=True)
class OtpSecret:
    secret: str = field(repr=False)
    digits: int = 6
    interval: int = 30
    algorithm: str = "SHA1"

    def step(self, now: float | None = None) -> int:
        return int((time.time() if now is None else now) // self.interval)

    def code(self, step: int) -> str:
        import pyotp  # imported late: keeps CLI start-up fast

        digest = {"SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}[self.algorithm]
        totp = pyotp.TOTP(self.secret, digits=self.digits, interval=self.interval, digest=digest)
        return str(totp.at(step * self.interval))

    def seconds_left(self, now: float | None = None) -> float:
        now = time.time() if now is None else now
        return self.interval - (now % self.interval)

    def serialise(self) -> str:
        """What goes into the keyring: the bare secret, or a URI when not the defaults."""
        if (self.digits, self.interval, self.algorithm) == (6, 30, "SHA1"):
            return self.secret
        return (
            f"otpauth://totp/bastionctl?secret={self.secret}&digits={self.digits}"
            f"&period={self.interval}&algorithm={self.algorithm}"
        )


def parse_secret(text: str) -> OtpSecret:
    """A base32 secret (spaces and case ignored) or an otpauth://totp/ URI."""
    text = text.strip()
    if not text:
        raise UsageError("no TOTP secret given", "paste the base32 secret or otpauth:// URI")
    if text.lower().startswith("otpauth://"):
        return _parse_uri(text)
    return OtpSecret(_check_base32(text))


def _check_base32(value: str) -> str:
    secret = re.sub(r"[\s-]", "", value).upper().rstrip("=")
    if not re.fullmatch(r"[A-Z2-7]{16,}", secret):
        raise UsageError(
            "the TOTP secret is not base32",
            "expected at least 16 characters A-Z and 2-7, or an otpauth:// URI",
        )
    try:
        base64.b32decode(secret + "=" * (-len(secret) % 8))
    except binascii.Error:
        raise UsageError("the TOTP secret is not valid base32") from None
    return secret


def _parse_uri(uri: str) -> OtpSecret:
    parsed = urlparse(uri)
    if parsed.netloc.lower() != "totp":
        raise UsageError(f"only otpauth://totp/ URIs are supported, got otpauth://{parsed.netloc}")
    query = {k.lower(): v[-1] for k, v in parse_qs(parsed.query).items()}
    if "secret" not in query:
        raise UsageError("the otpauth:// URI has no secret= parameter")
    try:
        digits = int(query.get("digits", "6"))
        interval = int(query.get("period", "30"))
    except ValueError:
        raise UsageError("the otpauth:// URI has a non-numeric digits= or period=") from None
    algorithm = unquote(query.get("algorithm", "SHA1")).upper()
    if digits not in (6, 7, 8) or not 1 <= interval <= 300 or algorithm not in ALGORITHMS:
        raise UsageError(
            "the otpauth:// URI has unsupported parameters",
            "digits 6-8, period 1-300, algorithm SHA1/SHA256/SHA512",
        )
    return OtpSecret(_check_base32(query["secret"]), digits, interval, algorithm)


def is_yes_no_question(prompt: str) -> bool:
    return YES_NO_RE.search(prompt) is not None


def looks_like_totp_prompt(prompt: str, custom: str | None = None) -> bool:
    """Whether a (sanitised) prompt asks for the TOTP code: exactly "Verification code:", or
    the whole prompt matches `custom` (the config's `totp_prompt` regex); either way with or
    without OpenSSH's "(user@host) " in front and with optional trailing spaces. A yes/no
    question never is, whatever `custom` says."""
    if is_yes_no_question(prompt):
        return False
    whole = prompt.rstrip(" ")
    prefix = OPENSSH_PREFIX.match(whole)
    bare = whole[prefix.end() :] if prefix else whole
    if bare == TOTP_PROMPT:
        return True
    if custom is None:
        return False
    return any(re.fullmatch(custom, candidate) for candidate in (bare, whole))


def keyring_hint() -> str:
    """What to install for a keyring backend on this OS."""
    from bastionctl.system import api

    family = api.family()
    if family in ("darwin", "windows"):
        store = "the macOS Keychain" if family == "darwin" else "Windows Credential Manager"
        return (
            f"{store} works out of the box: check that PYTHON_KEYRING_BACKEND does not "
            "name another backend and that the keyring package is intact"
        )
    return (
        "install a Secret Service (gnome-keyring or KWallet, in a desktop or D-Bus session), "
        "or `pip install keyrings.alt` (a file keyring that keeps secrets in plain text)"
    )


class SecretStore:
    """TOTP secrets per bastion alias in the OS keyring (service `bastionctl`)."""

    def _keyring(self) -> ModuleType:
        import keyring
        import keyring.errors

        return keyring

    def warm(self) -> None:
        """Import keyring and pick its backend ahead of the first login, which waits for it.

        Reads nothing, so nothing can prompt; a failure shows again when a secret is read.
        """
        with contextlib.suppress(Exception):
            self._keyring().get_keyring()

    def backend_name(self) -> str:
        backend = self._keyring().get_keyring()
        return f"{type(backend).__module__}.{type(backend).__name__}"

    @staticmethod
    def _username(bastion: str) -> str:
        return f"totp:{bastion}"

    def get(self, bastion: str) -> OtpSecret | None:
        user = self._username(bastion)
        value = self._call("read", lambda k: k.get_password(KEYRING_SERVICE, user))
        if value is None:
            return None
        try:
            return parse_secret(value)
        except UsageError:
            raise SecretStoreError(
                f"the keyring entry for {bastion} is not a TOTP secret",
                f"replace it with `bastionctl otp set {bastion}`",
            ) from None

    def readable(self) -> SecretStoreError | None:
        """Why no secret can be read here (no usable backend), or None when reading works."""
        try:
            self._call("read", lambda k: k.get_password(KEYRING_SERVICE, self._username("")))
        except SecretStoreError as exc:
            return exc
        return None

    def set(self, bastion: str, secret: OtpSecret) -> None:
        self._call(
            "store",
            lambda k: k.set_password(KEYRING_SERVICE, self._username(bastion), secret.serialise()),
        )

    def delete(self, bastion: str) -> bool:
        import keyring.errors

        try:
            self._call(
                "remove", lambda k: k.delete_password(KEYRING_SERVICE, self._username(bastion))
            )
        except SecretStoreError as exc:
            if isinstance(exc.__cause__, keyring.errors.PasswordDeleteError):
                return False
            raise
        return True

    def _call(self, what: str, action: Callable[[ModuleType], Any]) -> Any:
        import keyring.errors

        try:
            return action(self._keyring())
        except keyring.errors.NoKeyringError:
            raise SecretStoreError(
                f"cannot {what} the TOTP secret: no keyring backend is available",
                f"{keyring_hint()}; until then bastionctl asks for the code",
            ) from None
        except keyring.errors.PasswordDeleteError as exc:
            raise SecretStoreError(f"cannot {what} the TOTP secret: not stored") from exc
        except keyring.errors.KeyringError as exc:
            # The message of a backend error names the backend, never the secret.
            raise SecretStoreError(
                f"cannot {what} the TOTP secret: keyring error ({type(exc).__name__})"
            ) from None


class UsedSteps:
    """The last TOTP step sent per bastion, shared by every bastionctl process of the user."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.state_dir() / "otp-steps.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, int]]:
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        with (
            file_lock(self.path.with_suffix(".lock")),
            os.fdopen(fd, "r+", encoding="utf-8") as handle,
        ):
            try:
                raw = handle.read()
                data = json.loads(raw) if raw.strip() else {}
                if not isinstance(data, dict):
                    data = {}
            except json.JSONDecodeError:
                data = {}
            steps = {k: v for k, v in data.items() if isinstance(v, int)}
            before = dict(steps)
            yield steps
            if steps != before:
                handle.seek(0)
                handle.truncate()
                handle.write(json.dumps(steps, sort_keys=True))
                handle.flush()
                os.fsync(handle.fileno())

    def last(self, bastion: str) -> int | None:
        with self._locked() as steps:
            return steps.get(bastion)

    def claim(self, bastion: str, step: int) -> bool:
        """Record `step` as used; False if it (or a later step) was already used."""
        with self._locked() as steps:
            if steps.get(bastion, -1) >= step:
                return False
            steps[bastion] = step
            return True


Notify = Callable[[str], None]


class TotpSource:
    """Hands out codes for one bastion, never the same step twice when the server forbids it."""

    def __init__(
        self,
        bastion: str,
        secret: OtpSecret,
        used: UsedSteps,
        single_use: bool = True,
        notify: Notify | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.bastion = bastion
        self.secret = secret
        self.used = used
        self.single_use = single_use
        self.notify = notify or (lambda _message: None)
        self.sleep = sleep

    def next_code(self) -> str:
        while True:
            step = self.secret.step()
            if not self.single_use:
                self.used.claim(self.bastion, step)
                return self.secret.code(step)
            if self.used.claim(self.bastion, step):
                return self.secret.code(step)
            wait = self.secret.seconds_left() + 0.2
            self.notify(
                f"the TOTP code for {self.bastion} was already used in this step; "
                f"waiting {wait:.0f} s for a fresh one (the bastion rejects a reused code)"
            )
            self.sleep(wait)
