"""`python -m bench` end to end on a tiny size, so the benchmark cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bastionctl.lab import down
from bench.run import LAB

from .conftest import require_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_bench_runs_on_a_tiny_size(tmp_path: Path) -> None:
    require_lab()
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench",
                "--rounds",
                "1",
                "--size-mb",
                "1",
                "--rtts",
                "20",
                "--count",
                "50",
                "--tui-hosts",
                "100",
                "--conn-rounds",
                "1",
                "--sequential",
                "20",
                "--concurrent",
                "40",
                "--churn",
                "200",
                "--out",
                str(tmp_path),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        down(LAB)  # the benchmark's own lab, even if it was killed half way
    assert result.returncode == 0, result.stderr[-2000:]
    (written,) = tmp_path.glob("bench-*.json")
    figures = {row["figure"] for row in json.loads(written.read_text())["table"]}
    assert {"upload MB/s", "download MB/s", "cold setup s", "inventory mapping 50 s"} <= figures
    assert "cold setup, foreground s" in figures
    assert "TUI 100 hosts ready s" in figures
    assert {"1 at a time: conns/s", "20 at a time: conns/s", "RTT p50 us"} <= figures
    assert {"RSS MB after 200 conns", "open fds after 200 conns"} <= figures
    assert "ratio" in result.stdout
