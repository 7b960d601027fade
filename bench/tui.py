"""TUI with thousands of hosts: time to ready and per-keystroke filter time, headless.

`python -m bench.tui [--hosts 5000]`. Ready: from App start until the host table holds every
host. Filter keystroke: from a key press in the filter until the list repaints with the result
(the frame it is drawn in), and the process CPU time the keystroke cost in all.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from textual.widgets import Input


def write_inventory(path: Path, hosts: int) -> None:
    lines = ['[bastions.jump]\nipv6 = "2001:db8::1"\nuser = "admin"\n']
    for n in range(hosts):
        platform = "windows" if n % 3 == 0 else "linux"
        lines.append(
            f'[hosts.host-{n:05d}]\nipv6 = "2001:db8:1::{n:x}"\nuser = "ops"\n'
            f'platform = "{platform}"\nfqdn = "host-{n:05d}.example.org"\n'
        )
    path.write_text("\n".join(lines))


async def measure(config: Path, hosts: int, keys: str) -> dict[str, float]:
    from bastionctl.tui.app import create_app
    from bastionctl.tui.host_table import HostTable

    started = time.perf_counter()
    app = create_app(config, watch_others=False, check_dns=False)
    figures: dict[str, float] = {}
    async with app.run_test(size=(160, 50)) as pilot:
        table = app.query_one(HostTable)
        while table.row_count < hosts + 1:
            await asyncio.sleep(0.005)
        await pilot.pause()
        figures["ready s"] = time.perf_counter() - started
        await pilot.press("slash")
        # Until the list repaints: the first line rendered after the key went in.
        painted: list[float] = []
        original = table.render_line

        def render_line(y: int) -> Any:
            if not painted:
                painted.append(time.perf_counter())
            return original(y)

        table.render_line = render_line  # type: ignore[method-assign]
        times, cpu = [], []
        for key in keys:
            painted.clear()
            before, cpu_before = time.perf_counter(), time.process_time()
            await pilot.press(key)
            while not painted:
                await asyncio.sleep(0.001)
            times.append(painted[0] - before)
            await pilot.pause()
            cpu.append(time.process_time() - cpu_before)
        figures["filter keystroke ms (median)"] = statistics.median(times) * 1000
        figures["filter keystroke ms (max)"] = max(times) * 1000
        figures["filter keystroke CPU ms (median)"] = statistics.median(cpu) * 1000
        assert app.query_one("#filter", Input).value == keys
    return figures


def run(hosts: int, keys: str = "host-012") -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "big.toml"
        write_inventory(config, hosts)
        return asyncio.run(measure(config, hosts, keys))


TARGETS = {"ready s": "<= 1 s", "filter keystroke ms (median)": "<= 100 ms"}


def target_of(figure: str) -> str:
    return next((t for k, t in TARGETS.items() if figure.endswith(k)), "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=5000)
    args = parser.parse_args()
    for figure, value in run(args.hosts).items():
        print(f"TUI {args.hosts} hosts {figure:<32}{value:>10.3f}  {TARGETS.get(figure, '')}")


if __name__ == "__main__":
    main()
