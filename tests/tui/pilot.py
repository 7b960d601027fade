"""Helpers for driving the app in Textual's pilot: build it, wait for it, read its log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.widgets import RichLog

from bastionctl.tui.app import BastionApp, create_app

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "bastionctl" / "templates" / "example.toml"
FIXED_CLOCK = 1_800_000_012.0  # 12 s into a step: 18 s left


def app(config: Path = EXAMPLE) -> BastionApp:
    # No DNS lookups: the example's names would go to the machine's resolver.
    return create_app(config, clock=lambda: FIXED_CLOCK, watch_others=False, check_dns=False)


async def until(pilot: Any, check: Callable[[], object], timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"not reached within {timeout} s")


async def ready(pilot: Any, tui: BastionApp) -> None:
    """Until the inventory has loaded (its worker ran and the table was filled)."""
    await until(pilot, lambda: tui.config is not None, timeout=5)


def log_text(tui: BastionApp) -> str:
    return "\n".join(str(line.text) for line in tui.query_one(RichLog).lines)
