"""Directories only this user may use: a real directory (not a symlink), owned by the user and
mode 0700 where the OS has owners and modes (on Windows the per-user profile folders are)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bastionctl.errors import BastionctlError
from bastionctl.system.home import user_id


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
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(path, 0o700)
    return path
