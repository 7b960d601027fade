"""The TUI over an EC2 inventory: progress in the log, partial results with a warning, F5."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastionctl.tui.app import create_app
from bastionctl.tui.host_table import HostTable
from tests.ec2.conftest import Aws
from tests.tui import pilot as pilot_helpers
from tests.tui.pilot import log_text


def until(pilot: Any, check: Any, timeout: float = 20) -> Any:
    return pilot_helpers.until(pilot, check, timeout)


async def test_refresh_shows_progress_and_partial_results(aws: Aws, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[ec2]]\nprofile = "prod"\nregions = ["eu-central-1", "xx-nowhere-1"]\n'
        f'endpoint_url = "{aws.url}"\n'
    )
    tui = create_app(config, watch_others=False, check_dns=False)
    async with tui.run_test(size=(130, 40)) as pilot:
        table = tui.query_one(HostTable)
        await until(pilot, lambda: table.row_count == 3)
        assert [r.alias for r in table.rows] == ["server-01", "server-02", "server-03"]
        # Progress reaches the log panel through the queue it drains every 0.2 s.
        await until(pilot, lambda: "ec2 prod/eu-central-1: 3 instances" in log_text(tui))
        assert any("warning" in n.message for n in tui._notifications)
        assert "ec2 prod/xx-nowhere-1:" in log_text(tui)
        before = log_text(tui).count("ec2 prod/eu-central-1: 3 instances")
        await pilot.press("f5")
        await until(
            pilot, lambda: log_text(tui).count("ec2 prod/eu-central-1: 3 instances") > before
        )
        assert table.row_count == 3
