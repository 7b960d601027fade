"""Logging in on a paramiko Transport: publickey and keyboard-interactive, in either order.

Each keyboard-interactive prompt is answered on its own: a TOTP prompt (otp.looks_like_totp_prompt:
"Verification code:" or the config's `totp_prompt`) from the keyring secret when there is one,
anything else (or no secret) by asking the user, who is told which server asks. Everything the
server says (prompts, name, instructions, method names, error texts) is sanitised first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import paramiko

from bastionctl import sanitise
from bastionctl.errors import AuthError, BastionctlError, ConfigError
from bastionctl.model import Bastion, Endpoint
from bastionctl.otp import TotpSource, looks_like_totp_prompt
from bastionctl.prompting import Origin, Question, Role

log = logging.getLogger(__name__)

# Asks the user; (prompt, echo) -> answer. Raises AuthError when nobody can answer. A server's
# question comes as a prompting.Question (a str that also says which server asks).
Asker = Callable[[str, bool], str]


class _Aborted(EOFError):
    """Ends a login from inside paramiko's transport thread, where the prompts are answered.

    paramiko logs any other exception there as an error with its traceback; an EOFError it
    takes quietly as the end of the conversation. The reason stays on the answerer.
    """


class PromptAnswerer:
    """The keyboard-interactive handler for one login."""

    def __init__(
        self,
        endpoint: Endpoint,
        totp_factory: Callable[[], TotpSource | None],
        ask: Asker,
        totp_prompt: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.ask = ask
        # The config's regex for a TOTP prompt besides "Verification code:".
        self.totp_prompt = totp_prompt
        self.totp_answers = 0
        # What the person was asked, in order; whether each was a TOTP prompt.
        self.asked: list[tuple[str, bool]] = []
        # Looked up on the first TOTP prompt only: key-only targets never touch the keyring.
        self._totp_factory = totp_factory
        self._totp: TotpSource | None = None
        self._totp_resolved = False
        # Why no answer was sent (cancelled, nobody to ask): raised again by authenticate().
        self.aborted: BastionctlError | None = None

    def _totp_source(self) -> TotpSource | None:
        if not self._totp_resolved:
            self._totp = self._totp_factory()
            self._totp_resolved = True
        return self._totp

    def __call__(
        self, title: str, instructions: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str]:
        if title or instructions:
            log.info(
                "%s's keyboard-interactive login: %r %r",
                self.endpoint.alias,
                sanitise.line(title),
                sanitise.line(instructions),
            )
        try:
            return [self._answer(prompt, echo) for prompt, echo in prompts]
        except BastionctlError as exc:
            self.aborted = exc
            raise _Aborted from None

    def _answer(self, prompt: str, echo: bool) -> str:
        text = sanitise.prompt(prompt) or "Response:"
        is_totp = looks_like_totp_prompt(text, self.totp_prompt)
        totp = self._totp_source() if is_totp else None
        if totp is not None:
            log.info("answering %r for %s from the keyring", text, self.endpoint.alias)
            code = totp.next_code()
            self.totp_answers += 1
            return code
        log.info("asking the user %r for %s", text, self.endpoint.alias)
        self.asked.append((text, is_totp))
        role = Role.BASTION if isinstance(self.endpoint, Bastion) else Role.TARGET
        return self.ask(Question(Origin(self.endpoint.alias, role, text)), echo)


def load_identity(endpoint: Endpoint, ask: Asker) -> list[paramiko.PKey]:
    """The endpoint's identity file, or the keys of a running ssh-agent."""
    path = endpoint.identity_file
    if path is None:
        keys = list(paramiko.Agent().get_keys())
        if not keys:
            raise ConfigError(
                f"no identity_file for {endpoint.alias} and no keys in ssh-agent",
                "set identity_file for it in the config or ssh-add a key",
            )
        return keys  # type: ignore[return-value]
    return [_load_key_file(endpoint.alias, path, ask)]


def _load_key_file(alias: str, path: Path, ask: Asker) -> paramiko.PKey:
    if not path.is_file():
        raise ConfigError(f"identity file {path} for {alias} does not exist")
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        passphrase = ask(f"Passphrase for {path}:", False)
        try:
            return paramiko.PKey.from_path(path, password=passphrase)
        except paramiko.SSHException:
            raise AuthError(f"wrong passphrase for identity file {path}") from None
    except (paramiko.SSHException, OSError, ValueError) as exc:
        raise ConfigError(f"cannot load identity file {path} for {alias}: {exc}") from None


def authenticate(
    transport: paramiko.Transport,
    endpoint: Endpoint,
    keys: Sequence[paramiko.PKey],
    answerer: PromptAnswerer,
) -> None:
    """Log in with whatever the server asks for, each method at most once.

    A rejected keyboard-interactive answer is never retried: the bastion counts every
    attempt against its rate limit and fail2ban watches its log.
    """
    user = endpoint.user
    try:
        transport.auth_none(user)
        return
    except paramiko.BadAuthenticationType as exc:
        allowed = list(exc.allowed_types)
    except paramiko.SSHException as exc:
        raise AuthError(
            f"{endpoint.alias} closed the connection during login: {sanitise.line(str(exc))}"
        ) from None
    tried: set[str] = set()
    while not transport.is_authenticated():
        if "publickey" in allowed and "publickey" not in tried:
            tried.add("publickey")
            allowed = _publickey(transport, endpoint, keys)
        elif "keyboard-interactive" in allowed and "keyboard-interactive" not in tried:
            tried.add("keyboard-interactive")
            allowed = _interactive(transport, endpoint, answerer)
        else:
            wanted = sanitise.line(", ".join(allowed))  # method names, as the server sent them
            raise AuthError(
                f"{endpoint.alias} wants {wanted or 'nothing we can offer'} "
                f"after {', '.join(sorted(tried)) or 'none'}; bastionctl logs in with "
                "publickey and keyboard-interactive only",
                "enable one of them for this user on the server (sshd_config "
                "AuthenticationMethods, KbdInteractiveAuthentication)",
            )


def _publickey(
    transport: paramiko.Transport, endpoint: Endpoint, keys: Sequence[paramiko.PKey]
) -> list[str]:
    for key in keys:
        try:
            return list(transport.auth_publickey(endpoint.user, key))
        except paramiko.BadAuthenticationType as exc:
            return list(exc.allowed_types)
        except paramiko.AuthenticationException:
            continue
        except paramiko.SSHException as exc:
            raise AuthError(
                f"{endpoint.alias}: public key login failed: {sanitise.line(str(exc))}"
            ) from None
    raise AuthError(
        f"{endpoint.alias} refused the key for {endpoint.user}@{endpoint.connect_host}",
        f"check identity_file ({endpoint.identity_file or 'ssh-agent'}) and the user name",
    )


def _interactive(
    transport: paramiko.Transport, endpoint: Endpoint, answerer: PromptAnswerer
) -> list[str]:
    try:
        return list(transport.auth_interactive(endpoint.user, answerer))
    except paramiko.BadAuthenticationType as exc:
        return list(exc.allowed_types)
    except (paramiko.SSHException, EOFError) as exc:
        if answerer.aborted is not None:
            # Nothing was answered: the person declined, or nobody was there to ask.
            raise answerer.aborted from None
        if not isinstance(exc, paramiko.AuthenticationException):
            raise AuthError(
                f"{endpoint.alias}: keyboard-interactive login failed: {sanitise.line(str(exc))}"
            ) from None
    raise _rejected(endpoint, answerer)


def _rejected(endpoint: Endpoint, answerer: PromptAnswerer) -> AuthError:
    """The keyboard-interactive login was rejected: whose answer, and what to check."""
    alias = endpoint.alias
    not_retrying = "not retrying, so the bastion does not lock you out"
    typed_other = [text for text, is_totp in answerer.asked if not is_totp]
    if typed_other and not answerer.totp_answers:
        return AuthError(
            f"{alias} rejected the answer you typed to {typed_other[-1]!r} "
            f"(user {endpoint.user}); {not_retrying}",
            "check the password (or answer) and the user name, then try again",
        )
    source = "the keyring's TOTP secret" if answerer.totp_answers else "the code you typed"
    hint = (
        f"check the secret with `bastionctl otp code {alias}` against your authenticator app, "
        "and the clock"
        if answerer.totp_answers
        else "type the current code of your authenticator app; check this machine's clock"
    )
    return AuthError(f"{alias} rejected the TOTP code ({source}); {not_retrying}", hint)
