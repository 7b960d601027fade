"""The TUI benchmark runs on a tiny inventory so it cannot rot (timings are not checked)."""

from __future__ import annotations

from bench import tui


def test_tui_benchmark_runs() -> None:
    figures = tui.run(hosts=150, keys="host-1")
    assert {"ready s", "filter keystroke ms (median)"} <= set(figures)
    assert all(value > 0 for value in figures.values())
