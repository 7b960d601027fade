"""The offline benchmarks run on a tiny size so they cannot rot (timings are not checked)."""

from __future__ import annotations

from bench import offline


def test_offline_benchmarks_run_and_keep_every_instance() -> None:
    figures = offline.run(count=120, repeat=1)
    assert set(figures) == {
        "EC2 fetch+trim 120 (stubbed pages) s",
        "inventory mapping 120 s",
        "ssh config render 120 s",
    }
    assert all(seconds > 0 for seconds in figures.values())
