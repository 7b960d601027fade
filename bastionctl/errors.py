"""One error hierarchy with user-facing messages, and the exit statuses."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    INTERRUPTED = 130


class BastionctlError(Exception):
    """An error whose message is fit to show the user as one line."""

    exit_status = ExitStatus.FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class UsageError(BastionctlError):
    """The command line names something that does not exist or cannot be combined."""

    exit_status = ExitStatus.USAGE


class ConfigError(BastionctlError):
    """A config or inventory file is unreadable or invalid."""

    exit_status = ExitStatus.USAGE


class SecretStoreError(BastionctlError):
    """The keyring cannot be used."""


class HostKeyError(BastionctlError):
    """A server's host key is unknown or does not match known_hosts."""


class AuthError(BastionctlError):
    """A server refused our login."""


class LoginCancelled(AuthError):
    """The person declined to answer a login prompt (Esc in the TUI's TOTP dialog)."""


class NeedsInput(LoginCancelled):
    """A login asked something and the front end that could answer has gone.

    Nothing was sent: the tunnel waits until a front end answers (`tunnel answer`, the TUI).
    """

    def __init__(self, prompt: str) -> None:
        super().__init__(
            f"the login waits for an answer to {prompt!r} and no front end is attached",
            "answer it with `bastionctl tunnel answer ID` or from the TUI",
        )
        self.prompt = prompt


class ConnectError(BastionctlError):
    """A TCP connection, SSH handshake or channel could not be opened."""


class PortInUseError(BastionctlError):
    """The local port of a tunnel is taken."""


class ProtocolError(BastionctlError):
    """Another bastionctl process sent a control message of another version or shape."""


class LabError(BastionctlError):
    """The local lab cannot be brought up, inspected or removed."""
