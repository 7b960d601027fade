"""File locks between bastionctl processes: fcntl where it exists, msvcrt on Windows, a lock
file that exists while held elsewhere (filelock's three kinds, chosen by capability)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock

from bastionctl.errors import ConfigError
from bastionctl.system import api


def file_lock(path: Path) -> filelock.BaseFileLock:
    """A lock on `path` (a file of its own, mode 0600 where modes exist), used with `with`."""
    if api.has("fcntl"):
        # The lock file stays: unlinking a file others may hold a lock on would split them.
        return filelock.UnixFileLock(str(path), mode=0o600, preserve_lock_file=True)
    if api.has("msvcrt"):
        return filelock.WindowsFileLock(str(path), mode=0o600, preserve_lock_file=True)
    # The lock is the file's existence: it must go when released.
    return filelock.SoftFileLock(str(path), mode=0o600)


@contextmanager
def holding(path: Path, what: Path, timeout: float, busy_hint: str) -> Iterator[None]:
    """The lock file `path` held around a read-modify-write of `what`; a lock that stays taken
    for `timeout` seconds, or cannot be taken, is one ConfigError naming `what`."""
    lock = file_lock(path)
    try:
        lock.acquire(timeout=timeout)
    except filelock.Timeout:
        raise ConfigError(f"{what} stays locked by another bastionctl process", busy_hint) from None
    except OSError as exc:
        raise ConfigError(f"cannot lock {what}: {exc.strerror}") from None
    try:
        yield
    finally:
        lock.release()
