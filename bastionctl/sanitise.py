"""Text from outside bastionctl made fit to show: on a terminal, in a log, in the TUI.

Every string a server sends (banners, disconnect reasons, keyboard-interactive names,
instructions and prompts, channel-open failure texts, version lines), that an EC2 tag carries,
or that another bastionctl process reports (a tunnel's last error, what it waits for) goes
through here before a person sees it. One implementation, three shapes:

- `line(text)`: one line (a log record, a notification, a table cell, a dialog label, a CLI
  message); line breaks become spaces.
- `text(text)`: lines kept (a traceback, a report, a multi-line error).
- `prompt(text)`: a question shown whole for the person to decide on; lines kept, and room
  for OpenSSH's host-key question with its fingerprint and the other names of the key.

What is removed:

- escape sequences, whole: CSI (`ESC [` or 0x9b, parameters, intermediates, final byte), the
  string sequences OSC (`ESC ]`/0x9d), DCS (`ESC P`/0x90), SOS (`ESC X`/0x98), PM (`ESC ^`/0x9e)
  and APC (`ESC _`/0x9f) up to their terminator (BEL, `ESC \\` or 0x9c; an unterminated one up to
  the end of the text, as a terminal would swallow it), and every other `ESC` sequence (`ESC`,
  intermediates 0x20-0x2f, a final 0x30-0x7e);
- control characters: C0 (0x00-0x1f) but for line breaks and tab, DEL, C1 (0x80-0x9f);
- Unicode format characters (category Cf: bidi overrides and isolates, zero-width characters,
  tag characters), which can make a text read other than it is, and lone surrogates;
- line breaks (CR LF, CR, LF, VT, FF, NEL, U+2028, U+2029): a space in `line`, LF in `text`
  and `prompt`; a tab is a space in `line` and kept otherwise.

Then surrounding whitespace is trimmed (not by `text`, which keeps a text's layout) and the
length bounded: a longer text is cut and ends in "…".

Nothing here is markup-aware: the TUI shows the result as plain text (never as Rich or Textual
markup), so brackets pass through unchanged.
"""

from __future__ import annotations

import logging
import re

# One line in a list, a notification, a dialog label or a CLI message.
LINE_LIMIT = 500
# A question shown for a decision. OpenSSH's host-key question ("The authenticity of host ...
# can't be established. ... key fingerprint is SHA256:... This host key is known by the
# following other names/addresses: ... Are you sure you want to continue connecting
# (yes/no/[fingerprint])? ") runs to several hundred characters; it must stay whole.
PROMPT_LIMIT = 4000
# One log record's message (paramiko's debug lines list every algorithm on offer).
LOG_LIMIT = 4000
# Lines kept: a traceback, a report, a multi-line error.
TEXT_LIMIT = 20000
# Work is bounded too: only this many times the limit is looked at (a cut escape sequence is
# an unterminated one, so removed whole).
_READ_FACTOR = 16
ELLIPSIS = "…"

# String sequences: introducer, payload, terminator (BEL, ESC \, ST) or the end of the text.
_STRING = r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
_CSI = r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
_OTHER_ESC = r"\x1b[\x20-\x2f]*[\x30-\x7e]?"
SEQUENCES = re.compile(f"{_STRING}|{_CSI}|{_OTHER_ESC}")
BREAKS = re.compile("\r\n|[\r\n\x0b\x0c\x85\u2028\u2029]")
# Controls left once sequences and breaks are handled (tab is handled per shape), format
# characters (Unicode Cf, as of Unicode 15) and lone surrogates.
UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
    "\ud800-\udfff]"
)


def _clean(value: str, limit: int, *, lines: bool, trim: bool = True) -> str:
    value = SEQUENCES.sub("", value[: limit * _READ_FACTOR])
    value = BREAKS.sub("\n" if lines else " ", value)
    value = UNSAFE.sub("", value if lines else value.replace("\t", " "))
    if trim:
        value = value.strip()
    return value if len(value) <= limit else value[: limit - 1] + ELLIPSIS


def line(value: str, limit: int = LINE_LIMIT) -> str:
    """`value` on one line: no escape sequences, control or format characters; trimmed and
    bounded."""
    return _clean(value, limit, lines=False)


def text(value: str, limit: int = TEXT_LIMIT) -> str:
    """`value` with its lines (LF only) and its whitespace kept: no escape sequences, other
    control or format characters; bounded."""
    return _clean(value, limit, lines=True, trim=False)


def prompt(value: str) -> str:
    """A question for the person, shown whole: lines kept, trimmed, up to PROMPT_LIMIT."""
    return _clean(value, PROMPT_LIMIT, lines=True)


class SafeFormatter(logging.Formatter):
    """For every log handler bastionctl installs (stderr, the agent's log file, the TUI's
    session log): whatever a record carries (paramiko logs what servers send), its line is
    sanitised and bounded (LOG_LIMIT); a traceback keeps its lines, sanitised too."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        shown = line(self.formatMessage(record), LOG_LIMIT)
        # Not cached in record.exc_text: other handlers format the record their own way.
        extra = [record.exc_text or ""]
        if record.exc_info and not record.exc_text:
            extra = [self.formatException(record.exc_info)]
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for part in extra:
            if part:
                shown += "\n" + text(part)
        return shown
