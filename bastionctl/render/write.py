"""Installing rendered text into ~/.ssh: a managed include file or a managed block.

Atomic (temp file, fsync, rename), a timestamped backup of any file changed, a lock against
concurrent runs, and every byte outside the managed part kept as it was. A file that is a
symbolic link (a dotfiles checkout) stays one: its target is replaced, with the temp file
beside the target. An existing file keeps its mode; a new one is 0600, and a directory made
on the way (~/.ssh itself, config.d) 0700. Backups go to ~/.ssh/bastionctl-backups/, where
no `Include` of ~/.ssh/config can load them (checked; else the state directory's
ssh-backups/): a backup in config.d/ would be read by `Include config.d/*`. The lock file
(`.NAME.bastionctl.lock` beside the file) stays: unlinking a lock others may hold splits them.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import os
import re
import shlex
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath

from bastionctl import paths, validate
from bastionctl.atomic import write_atomic
from bastionctl.errors import BastionctlError
from bastionctl.paths import ssh_include_file
from bastionctl.system.locks import file_lock

BACKUP_DIR = "bastionctl-backups"
NEW_FILE_MODE = 0o600
DIR_MODE = 0o700
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


def install(
    changes: list[Change], control_dir: Path | None, ssh_dir: Path | None = None
) -> list[tuple[Change, Path | None]]:
    """Write every change (the ControlPath directory first, when the flavour has one: None
    for Windows OpenSSH); each with its backup, if any (in backup_dir's choice)."""
    ssh_dir = ssh_dir or Path.home() / ".ssh"
    if control_dir is not None:
        try:
            control_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise BastionctlError(f"cannot create {control_dir}: {exc.strerror}") from None
    backups = backup_dir(ssh_dir, changes)
    return [(change, apply(change, backups)) for change in changes]


def apply(change: Change, backups: Path) -> Path | None:
    """Write the change (if any), a backup of the old file in `backups` first; returns the
    backup made, if one was."""
    if not change.changed:
        return None
    path = change.path
    make_dirs(path.parent)
    with _locked(path):
        target = write_target(path)
        make_dirs(target.parent)
        current = read_existing(path)
        if current != change.old:
            raise BastionctlError(f"{path} changed while bastionctl was working; run it again")
        mode = NEW_FILE_MODE
        backup = None
        if current is not None:
            try:
                mode = stat.S_IMODE(target.stat().st_mode)
                backup = _backup(target, path.name, backups)
            except OSError as exc:
                raise BastionctlError(
                    f"cannot back up {path} in {backups}: {exc.strerror}", "nothing was changed"
                ) from None
        try:
            write_atomic(target, change.new, mode=mode)
        except OSError as exc:
            raise BastionctlError(
                f"cannot write {target}: {exc.strerror}", "nothing was changed"
            ) from None
        return backup


def write_target(path: Path) -> Path:
    """The file to replace for `path`: itself, or where its symbolic link(s) lead (the link
    stays a link). A link to nothing, or to something other than a file, is refused."""
    if not path.is_symlink():
        if path.exists() and not path.is_file():
            raise BastionctlError(f"{path} is not a regular file; not touching it")
        return path
    target = Path(os.path.realpath(path))
    if not target.exists():
        raise BastionctlError(
            f"{path} is a symbolic link to {target}, which does not exist",
            "create the file it points to, or remove the link; nothing was changed",
        )
    if not target.is_file():
        raise BastionctlError(f"{path} links to {target}, which is not a regular file")
    return target


def make_dirs(directory: Path) -> None:
    """`directory` and any missing parents, each one made here mode 0700 (Path.mkdir would
    give parents the umask's mode: a missing ~/.ssh would come out 0755)."""
    missing: list[Path] = []
    current = directory
    while not current.is_dir() and current.parent != current:
        missing.append(current)
        current = current.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=DIR_MODE)
            created.chmod(DIR_MODE)  # exactly, whatever the umask took away
        except FileExistsError:
            continue
        except OSError as exc:
            raise BastionctlError(f"cannot create {created}: {exc.strerror}") from None


def _backup(target: Path, name: str, backups: Path) -> Path:
    """A copy of `target`'s bytes in `backups` (0700), new and mode 0600, never through a link."""
    make_dirs(backups)
    data = target.read_bytes()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_BINARY", 0)
    for attempt in range(100):
        suffix = f"-{attempt}" if attempt else ""
        backup = backups / f"{name}.bastionctl-{stamp}{suffix}.bak"
        try:
            fd = os.open(backup, flags, NEW_FILE_MODE)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except BaseException:
            backup.unlink(missing_ok=True)
            raise
        return backup
    raise FileExistsError(17, "too many backups this second", str(backups))


def backup_dir(ssh_dir: Path, changes: Iterable[Change] = ()) -> Path:
    """Where backups go: ~/.ssh/bastionctl-backups/ unless an `Include` of ~/.ssh/config (as
    it is and as `changes` leave it) could load a file there, then the state directory's
    ssh-backups/. (Includes inside included files are not followed.)"""
    config = ssh_dir / "config"
    texts = [read_existing(config)]
    texts += [c.new for c in changes if c.path == config]
    patterns = [p for text in texts if text for p in include_patterns(text)]
    candidates = (ssh_dir / BACKUP_DIR, paths.state_dir() / "ssh-backups")
    for candidate in candidates:
        if not any(_may_load(pattern, candidate, ssh_dir) for pattern in patterns):
            return candidate
    raise BastionctlError(
        f"every place for backups ({', '.join(map(str, candidates))}) is named by an Include "
        "of ~/.ssh/config; nothing was changed",
        "narrow the Include patterns",
    )


INCLUDE_RE = re.compile(r"\s*include(?:\s*=\s*|\s+)(.*)", re.IGNORECASE)


def include_patterns(text: str) -> list[str]:
    """The arguments of every Include line (in or out of Host/Match blocks)."""
    patterns: list[str] = []
    for line in text.splitlines():
        match = INCLUDE_RE.fullmatch(line)
        if not match:
            continue
        try:
            patterns += shlex.split(match.group(1), comments=True)
        except ValueError:  # an unbalanced quote: ssh refuses the file; be careful anyway
            patterns += match.group(1).split()
    return patterns


def _may_load(pattern: str, directory: Path, ssh_dir: Path) -> bool:
    """Whether ssh's glob of `pattern` (relative to ~/.ssh, `~` expanded, no tokens or
    variables: ssh_config gives Include neither) could name `directory` or a file in it."""
    if pattern == "~" or pattern.startswith("~/"):
        pattern = str(ssh_dir.parent) + pattern[1:]
    elif pattern.startswith("~"):
        pattern = os.path.expanduser(pattern)  # ~user/...
    full = PurePath(pattern) if PurePath(pattern).is_absolute() else PurePath(ssh_dir, pattern)
    pattern_parts = full.parts
    for place in {directory, directory.resolve()}:
        parts = place.parts
        if len(pattern_parts) == len(parts) and _glob_parts(pattern_parts, parts):
            return True
        if len(pattern_parts) == len(parts) + 1 and _glob_parts(pattern_parts[:-1], parts):
            return True
    return False


def _glob_parts(patterns: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """glob(3) on path components: a wildcard never matches a leading dot."""
    for pattern, part in zip(patterns, parts, strict=True):
        if part.startswith(".") and not pattern.startswith("."):
            return False
        if not fnmatch.fnmatchcase(part, pattern):
            return False
    return True
