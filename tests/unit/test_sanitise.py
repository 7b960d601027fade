"""The one sanitiser for text from servers, tags and other processes (bastionctl.sanitise)."""

from __future__ import annotations

import logging
import sys
import unicodedata

import pytest

from bastionctl import sanitise
from bastionctl.sanitise import SafeFormatter

# What a hostile server may send: OSC 52 (writes the clipboard), OSC 0 (the window title) with
# both terminators, markup for Rich/Textual, and the 8-bit (C1) forms of CSI and OSC.
HOSTILE = (
    "\x1b]52;c;cHduZWQ=\x07\x1b]0;pwned\x1b\\[/] [@click=app.screenshot()] "
    "\x9b31m\x9d0;c1 title\x9cok"
)
FORBIDDEN = ("\x1b", "\x07", "\x9b", "\x9d", "\x9c", "\x90", "\r")


def clean(text: str) -> bool:
    return not any(c in text for c in FORBIDDEN)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (HOSTILE, "[/] [@click=app.screenshot()] ok"),
        ("Verification code: \x1b[2J\x1b]0;pwned\x07\x1b[31m", "Verification code:"),
        ("a\x1b[38;5;196mb\x1b[0mc", "abc"),  # CSI with parameters
        ("a\x1b[?1049hb", "ab"),  # private CSI (alternate screen)
        ("a\x9b2Jb", "ab"),  # 8-bit CSI
        ("a\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\b", "alinkb"),  # OSC 8 link
        ("a\x9d52;c;AAAA\x9cb", "ab"),  # 8-bit OSC, 8-bit ST
        ("a\x1bP+q544e\x1b\\b", "ab"),  # DCS (a terminfo query)
        ('a\x90$q"p\x9cb', "ab"),  # 8-bit DCS
        ("a\x1b_apc payload\x1b\\b", "ab"),  # APC
        ("a\x1b^pm payload\x07b", "ab"),  # PM
        ("a\x1bXsos\x1b\\b", "ab"),  # SOS
        ("a\x1b]0;unterminated title", "a"),  # swallowed to the end, as a terminal would
        ("a\x1b]0;x\x1b[31mb", "ab"),  # an ESC ends the string; the CSI goes too
        ("a\x1bcb", "ab"),  # RIS: a full reset
        ("a\x1b(Bb\x1b#8c\x1b7d", "abcd"),  # charset, DECALN, DECSC
        ("a\x1b", "a"),
        ("a\x00b\x08c\x7fd\x81e", "abcde"),  # C0, DEL, C1
        ("abc\u202edcba\u2066x\u2069\u200by\ufeffz\U000e0041", "abcdcbaxyz"),  # Cf
        ("one\r\ntwo\rthree\nfour\x0bfive\x0csix\u2028seven", "one two three four five six seven"),
        ("  tab\there  ", "tab here"),
        ("[b]bold[/b] [link=x]y[/link]", "[b]bold[/b] [link=x]y[/link]"),  # not markup-aware
        ("grüße, 日本, emoji 🙂", "grüße, 日本, emoji 🙂"),
    ],
)
def test_line_removes_sequences_and_controls(raw: str, shown: str) -> None:
    assert sanitise.line(raw) == shown


def test_text_and_prompt_keep_lines() -> None:
    raw = "  Welcome\r\n\x1b]0;t\x07  to\tthe\rbastion\n"
    assert sanitise.text(raw) == "  Welcome\n  to\tthe\nbastion\n"  # layout kept
    assert sanitise.prompt(raw) == "Welcome\n  to\tthe\nbastion"  # trimmed


def test_limits_are_named_and_marked() -> None:
    assert len(sanitise.line("x" * 5000)) == sanitise.LINE_LIMIT
    assert sanitise.line("x" * 5000).endswith(sanitise.ELLIPSIS)
    assert sanitise.line("x" * 10, limit=5) == "xxxx…"
    assert sanitise.line("x" * sanitise.LINE_LIMIT) == "x" * sanitise.LINE_LIMIT
    assert len(sanitise.prompt("y" * 100_000)) == sanitise.PROMPT_LIMIT
    assert len(sanitise.text("z\n" * 100_000)) == sanitise.TEXT_LIMIT
    # A huge escape sequence costs bounded work and leaves nothing behind.
    assert sanitise.line("a" + "\x1b]52;c;" + "A" * 10_000_000) == "a"


def test_openssh_host_key_question_stays_whole() -> None:
    names = "".join(f"    ~/.ssh/known_hosts:{n}: [hashed name]\n" for n in range(8))
    question = (
        "The authenticity of host 'token-db.corp.example (2001:db8:ffff:1:2:3:4:5)' can't be "
        "established.\nED25519 key fingerprint is "
        "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU.\n"
        f"This host key is known by the following other names/addresses:\n{names}"
        "    (2 additional names omitted)\n"
        "Are you sure you want to continue connecting (yes/no/[fingerprint])? "
    )
    assert len(question) > 200
    assert sanitise.prompt(question) == question.strip()


def test_no_control_or_format_character_is_left() -> None:
    """Unicode's Cc and Cf, whichever this Python knows: only LF and tab stay (in `text`)."""
    unsafe = [
        chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) in ("Cc", "Cf")
    ]
    joined = "x".join(unsafe)
    for shown in (sanitise.line(joined, 10**6), sanitise.text(joined, 10**6)):
        left = {f"U+{ord(c):04X}" for c in shown if unicodedata.category(c) in ("Cc", "Cf")}
        assert left <= {"U+0009", "U+000A"}
    assert set(sanitise.line(joined, 10**6)) <= {"x", " "}


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError(f"server said {HOSTILE}\nsecond line")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("paramiko.transport", logging.INFO, "x", 1, message, args, info)


def test_formatter_sanitises_the_message_and_tracebacks() -> None:
    formatter = SafeFormatter("%(levelname)s %(name)s: %(message)s")
    shown = formatter.format(record("Remote version/idstring: %s", f"SSH-2.0-x {HOSTILE}\r\nX"))
    assert shown == (
        "INFO paramiko.transport: Remote version/idstring: "
        "SSH-2.0-x [/] [@click=app.screenshot()] ok X"
    )
    with_trace = formatter.format(record("failed", exc=True))
    first, *rest = with_trace.split("\n")
    assert first == "INFO paramiko.transport: failed"
    assert rest[0] == "Traceback (most recent call last):"
    assert clean(with_trace) and "ValueError: server said [/]" in with_trace
    assert rest[-1] == "second line"
    # A traceback cached raw by another handler's formatter is sanitised all the same.
    raw = record("failed", exc=True)
    raw.exc_text = logging.Formatter().formatException(raw.exc_info)  # type: ignore[arg-type]
    assert "\x1b" in raw.exc_text and clean(formatter.format(raw))
    assert len(formatter.format(record("x" * 100_000))) == sanitise.LOG_LIMIT
