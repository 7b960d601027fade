"""Directories only this user may use: a real directory (not a symlink), owned by the user and
mode 0700 where the OS has owners and modes (on Windows the per-user profile folders are); and
the private runtime directory, where control sockets, the askpass helper and pid files live."""

from __future__ import annotations

import functools
import logging
import os
import stat
import tempfile
from pathlib import Path

from bastionctl import paths
from bastionctl.errors import BastionctlError
from bastionctl.system.home import user_id

log = logging.getLogger(__name__)


def private_dir(path: Path) -> Path:
    """`path`, created with its parents if missing, checked to be this user's own."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise BastionctlError(
            f"cannot create the directory {path}: {exc.strerror}", "check its parents"
        ) from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise BastionctlError(f"{path} is not a directory but a link or a file", "remove it")
    uid = user_id()
    if uid is not None:
        if info.st_uid != uid:
            raise BastionctlError(
                f"the directory {path} belongs to another user (uid {info.st_uid})",
                "remove it, or point bastionctl's directories elsewhere",
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode != 0o700:
            try:
                os.chmod(path, 0o700)
            except OSError as exc:
                raise BastionctlError(
                    f"the directory {path} is mode {mode:04o} and cannot be made 0700: "
                    f"{exc.strerror}",
                    "fix its mode (is it immutable, or on a read-only file system?)",
                ) from None
    return path


def runtime_dir() -> Path:
    """The private runtime directory, created and checked.

    XDG_RUNTIME_DIR (the per-login directory systemd makes) only when it is this user's and
    nobody else may write in it; otherwise platformdirs' answer unless that is in the shared
    temporary directory (its fallback without XDG_RUNTIME_DIR: /tmp/runtime-UID, which another
    user may have made first); then a directory under the user's own state directory.
    """
    return private_dir(_runtime_base(os.environ.get("XDG_RUNTIME_DIR")))


def runtime_dir_path() -> Path:
    """Where runtime_dir() is (or would be), without creating it."""
    return _runtime_base(os.environ.get("XDG_RUNTIME_DIR"))


@functools.lru_cache(maxsize=8)
def _runtime_base(xdg: str | None) -> Path:
    """Chosen once per process (and XDG_RUNTIME_DIR value): the warning is said once."""
    if xdg:
        if _users_alone(Path(xdg)):
            return Path(xdg) / paths.APP
        log.warning("XDG_RUNTIME_DIR=%s is not this user's alone; not using it", xdg)
    candidate = paths.platform_runtime_dir()
    if not xdg and not _inside(candidate, Path(tempfile.gettempdir())):
        return candidate
    return paths.state_dir() / "run"


def _users_alone(path: Path) -> bool:
    """A real directory of this user that others cannot write in (where there are owners)."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        return False
    uid = user_id()
    return uid is None or (info.st_uid == uid and not stat.S_IMODE(info.st_mode) & 0o022)


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def open_private_log(path: Path) -> int:
    """A log file of this user's, opened for appending: created 0600, never through a link."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, flags, 0o600)
    except OSError as exc:
        raise BastionctlError(f"cannot open the log {path}: {exc.strerror}") from None
