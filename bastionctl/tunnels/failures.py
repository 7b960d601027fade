"""Failures of a running tunnel, told once: one line per distinct failure, then at most one per
interval while it repeats, with how often it did.

A client that retries in a loop (an RDP client, a connection pool) would otherwise print a line
per connection; the count on the tunnel (`tunnel list`) still sees every one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Seconds between two lines for the same repeating failure.
INTERVAL = 10.0


@dataclass
class _Seen:
    shown_at: float
    pending: int = 0


class FailureDigest:
    """Decides which failure lines are shown now; the repeats in between are counted."""

    def __init__(
        self, interval: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = INTERVAL if interval is None else interval
        self._clock = clock
        self._seen: dict[str, _Seen] = {}

    def add(self, message: str) -> str | None:
        """The line to show for this failure now, or None when it is counted for later."""
        now = self._clock()
        seen = self._seen.get(message)
        if seen is None:
            self._seen[message] = _Seen(now)
            return message
        if now - seen.shown_at < self.interval:
            seen.pending += 1
            return None
        line = message
        if seen.pending:  # this one and those counted since the last line
            line = self._repeated(message, seen.pending + 1, now - seen.shown_at)
        self._seen[message] = _Seen(now)
        return line

    def due(self) -> list[str]:
        """Lines for repeats counted and not shown yet, once their interval has passed."""
        now = self._clock()
        lines = []
        for message, seen in self._seen.items():
            if seen.pending and now - seen.shown_at >= self.interval:
                lines.append(self._repeated(message, seen.pending, now - seen.shown_at))
                self._seen[message] = _Seen(now)
        return lines

    def next_due(self) -> float | None:
        """Seconds until due() has a line (0 when it has one now), None when nothing waits."""
        now = self._clock()
        waits = [
            max(0.0, seen.shown_at + self.interval - now)
            for seen in self._seen.values()
            if seen.pending
        ]
        return min(waits) if waits else None

    @staticmethod
    def _repeated(message: str, count: int, seconds: float) -> str:
        times = "once more" if count == 1 else f"{count} more times"
        return f"{message} ({times} in the last {seconds:.0f} s)"
