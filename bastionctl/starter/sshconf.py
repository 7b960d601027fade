"""OpenSSH client config, read as ssh reads it: enough to list its hosts and their options.

Keywords are case-insensitive and take their arguments after whitespace or one `=`; arguments
may be quoted; the first value of an option wins; `Include` takes globs, `~`, and paths
relative to ~/.ssh, and a file included from a block that does not apply never applies;
`Host` patterns (`*`, `?`, `!negated`) are matched against the name as given, with case, as
OpenSSH 9 does. `Match` blocks are not evaluated: they are listed, and never apply here.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bastionctl.errors import ConfigError

MAX_DEPTH = 16  # OpenSSH's READCONF_MAX_DEPTH
# Options with several values, kept in order (all others: the first one wins).
MULTI = frozenset({"identityfile", "localforward", "remoteforward", "dynamicforward"})
# ProxyJump and ProxyCommand exclude each other: whichever comes first wins.
PROXY = frozenset({"proxyjump", "proxycommand"})


@dataclass(frozen=True)
class Directive:
    keyword: str  # lower-case
    args: tuple[str, ...]
    raw: str  # the text after the keyword (ProxyCommand takes it whole)
    file: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Options:
    """One host's options as ssh would use them (keywords lower-case)."""

    values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    multi: dict[str, list[str]] = field(default_factory=dict)
    proxy: Directive | None = None  # the ProxyJump or ProxyCommand that applies

    def first(self, keyword: str) -> str | None:
        found = self.values.get(keyword)
        return found[0] if found else None


def split_args(text: str, where: str) -> list[str]:
    """OpenSSH's argv_split: whitespace separates, quotes group, `\\` escapes a quote,
    a backslash or (outside quotes) a space; `#` at the start of an argument ends the line."""
    args: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] == "#":
            break
        quote = ""
        arg: list[str] = []
        while i < n:
            char = text[i]
            if (
                char == "\\"
                and i + 1 < n
                and (text[i + 1] in "'\"\\" or (not quote and text[i + 1] == " "))
            ):
                arg.append(text[i + 1])
                i += 2
                continue
            if not quote and char in " \t":
                break
            if not quote and char in "'\"":
                quote = char
            elif quote and char == quote:
                quote = ""
            else:
                arg.append(char)
            i += 1
        if quote:
            raise ConfigError(f"{where}: unterminated quote")
        args.append("".join(arg))
    return args


LINE_RE = re.compile(r"\s*([^\s=]+)[ \t]*(?:=[ \t]*)?(.*)")


def parse_text(text: str, file: Path) -> list[Directive]:
    directives: list[Directive] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = LINE_RE.match(stripped)
        if not match:  # pragma: no cover - LINE_RE matches any non-empty text
            continue
        keyword, rest = match.group(1).lower(), match.group(2).strip()
        where = f"{file}:{number}"
        args = tuple(split_args(rest, where))
        if not args and keyword not in ("host", "match"):
            raise ConfigError(f"{where}: {match.group(1)} has no value")
        directives.append(Directive(keyword, args, rest, file, number))
    return directives


def pattern_matches(name: str, pattern: str) -> bool:
    """OpenSSH's match_pattern: `*` any run, `?` one character, everything else literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.DOTALL) is not None


def host_line_matches(name: str, patterns: tuple[str, ...]) -> bool:
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if pattern_matches(name, pattern[1:] if negated else pattern):
            if negated:
                return False
            matched = True
    return matched


def is_wildcard(pattern: str) -> bool:
    return pattern.startswith("!") or "*" in pattern or "?" in pattern


class SshConfig:
    """A user's ssh config with its Includes, read once."""

    def __init__(self, path: Path, home: Path) -> None:
        self.path = path
        self.home = home
        self._files: dict[Path, list[Directive]] = {}
        self.root = self._read(path)

    def _read(self, path: Path) -> list[Directive]:
        if path not in self._files:
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read ssh config {path}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise ConfigError(f"ssh config {path} is not UTF-8 text") from None
            self._files[path] = parse_text(text, path)
        return self._files[path]

    def include_files(self, directive: Directive) -> Iterator[Path]:
        for arg in directive.args:
            if arg.startswith("~"):
                pattern = str(self.home) + arg[1:] if arg[:2] in ("~", "~/") else arg
            elif Path(arg).is_absolute():
                pattern = arg
            else:
                pattern = str(self.home / ".ssh" / arg)
            for found in sorted(glob.glob(pattern)):
                if Path(found).is_file():
                    yield Path(found)

    def walk(self) -> Iterator[Directive]:
        """Every directive of every file, in order, Includes followed where they stand."""

        def visit(directives: list[Directive], depth: int) -> Iterator[Directive]:
            for directive in directives:
                yield directive
                if directive.keyword == "include":
                    if depth >= MAX_DEPTH:
                        raise ConfigError(f"{directive.where}: Include nested too deeply")
                    for path in self.include_files(directive):
                        yield from visit(self._read(path), depth + 1)

        return visit(self.root, 0)

    def options(self, name: str) -> Options:
        """What `ssh -G NAME` would use (Match blocks never apply)."""
        found = Options()

        def run(directives: list[Directive], active: bool, never: bool, depth: int) -> None:
            for d in directives:
                if d.keyword == "host":
                    active = not never and host_line_matches(name, d.args)
                elif d.keyword == "match":
                    active = False
                elif d.keyword == "include":
                    if depth >= MAX_DEPTH:
                        raise ConfigError(f"{d.where}: Include nested too deeply")
                    for path in self.include_files(d):
                        run(self._read(path), active, never or not active, depth + 1)
                elif not active:
                    continue
                elif d.keyword in PROXY:
                    found.proxy = found.proxy or d
                elif d.keyword in MULTI:
                    found.multi.setdefault(d.keyword, []).extend(d.args)
                else:
                    found.values.setdefault(d.keyword, d.args)

        run(self.root, True, False, 0)
        return found
