"""Writing files so that a reader sees the old content or the new, never half of either."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o600, *, exclusive: bool = False) -> None:
    """Write `text` to a new file beside `path` and rename it over `path`.

    The new file is created exclusively and at its final mode (never following a link someone
    placed there): in a shared directory nobody can slip a file or a symlink in between.
    With `exclusive`, an existing `path` is never replaced (FileExistsError): the new file is
    linked in under its name, which fails when the name is taken.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            if os.chmod in os.supports_fd:  # exactly `mode`: os.open's went through the umask
                os.chmod(fd, mode)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, path)
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename durable; Windows cannot open a directory, and needs no such step."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
