"""Installing rendered text into ~/.ssh: a managed include file or a managed block.

Atomic (temp file, fsync, rename), a timestamped backup of any file changed, mode 0600, a
lock against concurrent runs, and every byte outside the managed part kept as it was.
"""

from __future__ import annotations

import contextlib
import difflib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bastionctl import validate
from bastionctl.atomic import write_atomic
from bastionctl.errors import BastionctlError
from bastionctl.paths import ssh_include_file
from bastionctl.system.locks import file_lock

BEGIN = "# >>> bastionctl managed block >>>"
END = "# <<< bastionctl managed block <<<"


@dataclass(frozen=True)
class Change:
    path: Path
    old: str | None  # None: the file does not exist yet
    new: str

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                (self.old or "").splitlines(keepends=True),
                self.new.splitlines(keepends=True),
                fromfile=str(self.path) if self.old is not None else "/dev/null",
                tofile=str(self.path),
            )
        )


def read_existing(path: Path) -> str | None:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise BastionctlError(f"{path} is not UTF-8 text; not touching it") from None
    except OSError as exc:
        raise BastionctlError(f"cannot read {path}: {exc.strerror}") from None


def _newline(text: str | None) -> str:
    return "\r\n" if text and "\r\n" in text else "\n"


def include_line(include_path: Path, ssh_dir: Path) -> str:
    """`Include PATH` (relative to ~/.ssh when inside it): `/`-separated, which Windows
    OpenSSH reads too, and in double quotes when it has a space."""
    try:
        shown = include_path.relative_to(ssh_dir).as_posix()
    except ValueError:
        shown = include_path.as_posix()
    try:
        shown = validate.path(shown)
    except ValueError as exc:
        raise BastionctlError(
            f"cannot name {include_path} in ~/.ssh/config: {exc}", "choose another --write PATH"
        ) from None
    return f'Include "{shown}"' if " " in shown else f"Include {shown}"


def with_include(config: str | None, line: str) -> str:
    """`config` with `line` at the top, unless some line already says exactly that."""
    text = config or ""
    if any(existing.strip() == line for existing in text.splitlines()):
        return text
    newline = _newline(config)
    # Include must come before any Host/Match block to apply to every host.
    return (
        f"# added by bastionctl{newline}{line}{newline}{newline}" + text
        if text
        else (f"{line}{newline}")
    )


def with_block(config: str | None, body: str) -> str:
    """`config` with the managed block replaced (or added at the top)."""
    text = config or ""
    newline = _newline(config)
    block_body = body.replace("\r\n", "\n").rstrip("\n").replace("\n", newline)
    block = f"{BEGIN}{newline}{block_body}{newline}{END}"
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == END]
    stray = [
        i
        for i, line in enumerate(lines)
        if "bastionctl managed block" in line and i not in begins and i not in ends
    ]
    if not begins and not ends and not stray:
        return f"{block}{newline}{newline}{text}" if text else f"{block}{newline}"
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0] or stray:
        raise BastionctlError(
            "~/.ssh/config has bastionctl markers that do not form one block "
            f"(begin at lines {[i + 1 for i in begins]}, end at {[i + 1 for i in ends]})",
            "fix or remove them by hand; nothing was changed",
        )
    start, stop = begins[0], ends[0]
    after = lines[stop]
    tail_newline = after[len(END) :]  # keep whether the end marker had a line break
    return "".join(lines[:start]) + block + tail_newline + "".join(lines[stop + 1 :])


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = file_lock(path.with_name(f".{path.name}.bastionctl.lock"))
    try:
        lock.acquire()
    except OSError as exc:
        raise BastionctlError(
            f"cannot write in {path.parent}: {exc.strerror}", "check its permissions"
        ) from None
    try:
        yield
    finally:
        lock.release()


def plan(path: Path, new: str) -> Change:
    return Change(path, read_existing(path), new)


def install_changes(
    text: str, target: Path | None = None, block: bool = False, ssh_dir: Path | None = None
) -> list[Change]:
    """What installing `text` changes: the include file and its Include line, or the block."""
    ssh_dir = ssh_dir or Path.home() / ".ssh"
    config_file = ssh_dir / "config"
    if block:
        return [plan(config_file, with_block(read_existing(config_file), text))]
    target = target or ssh_include_file()
    line = include_line(target, ssh_dir)
    return [plan(target, text), plan(config_file, with_include(read_existing(config_file), line))]


def install(changes: list[Change], control_dir: Path | None) -> list[tuple[Change, Path | None]]:
    """Write every change (the ControlPath directory first, when the flavour has one: None
    for Windows OpenSSH); each with its backup, if any."""
    if control_dir is not None:
        try:
            control_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise BastionctlError(f"cannot create {control_dir}: {exc.strerror}") from None
    return [(change, apply(change)) for change in changes]


def apply(change: Change) -> Path | None:
    """Write the change (if any); returns the backup made, if one was."""
    if not change.changed:
        return None
    path = change.path
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise BastionctlError(f"cannot create {path.parent}: {exc.strerror}") from None
    with _locked(path):
        current = read_existing(path)
        if current != change.old:
            raise BastionctlError(f"{path} changed while bastionctl was working; run it again")
        backup = None
        if current is not None:
            backup = path.with_name(f"{path.name}.bastionctl-{time.strftime('%Y%m%d-%H%M%S')}.bak")
            shutil.copy2(path, backup)
            backup.chmod(0o600)
        try:
            write_atomic(path, change.new, mode=0o600)
        except OSError as exc:
            raise BastionctlError(
                f"cannot write {path}: {exc.strerror}", "nothing was changed"
            ) from None
        return backup
