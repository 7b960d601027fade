"""Keeping a tunnel-holding process on one CPU, where the OS lets a process choose (Linux:
sched_setaffinity and /proc); elsewhere placement is left to the kernel.

Python runs one thread at a time, and every packet passes from one thread to the next
(outer transport, inner transport, forwarder). Spread over several CPUs, each hand-over is a
cross-CPU wake-up and a contended GIL: in the lab, kept on one CPU, the round trip was 12%
shorter and downloads 20% faster. Which CPU is re-chosen every few seconds, so a process is
not left on a CPU that other work has filled.

On one CPU, a thread woken by another (a channel opened, a task handed to a worker) would
take the CPU from its waker at once, only to wait for the GIL its waker still holds: two
context switches for nothing. The pinned process's threads are therefore SCHED_BATCH where
the OS has it (Linux): a woken thread waits for its waker to block (a system call, which
frees the GIL) instead of preempting it; an idle CPU still runs it at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from bastionctl.system import api

log = logging.getLogger(__name__)

INTERVAL = 5.0
# Move only when another CPU is idler by this share of a CPU, so it does not flap.
MARGIN = 0.25
# BASTIONCTL_CPU=any leaves placement to the kernel.
SETTING = "BASTIONCTL_CPU"

# The CPUs this process had before it was pinned, and the one it is pinned to.
_original: set[int] | None = None
_pinned: int | None = None
_batched = False


def choose(current: int, busy: dict[int, float], own: float) -> int:
    """The CPU to run on: `busy` is each CPU's busy share, `own` this process's share of it."""
    others = {cpu: share for cpu, share in busy.items() if cpu != current}
    if current not in busy or not others:
        return min(busy, key=lambda cpu: busy[cpu]) if busy else current
    best = min(others, key=lambda cpu: others[cpu])
    # What the other work on our CPU leaves us, against what the best other CPU would.
    if busy[current] - own - others[best] > MARGIN:
        return best
    return current


def available() -> bool:
    """Whether this process can choose its CPUs here."""
    return api.has("sched_affinity") and api.has("procfs")


def _get_affinity() -> set[int]:
    if sys.platform == "linux" and available():
        return os.sched_getaffinity(0)
    raise OSError("no CPU affinity on this OS")


def _set_affinity(task: int, cpus: set[int]) -> None:
    if sys.platform == "linux" and available():
        os.sched_setaffinity(task, cpus)
        return
    raise OSError("no CPU affinity on this OS")


def _set_batch(task: int, batch: bool) -> None:
    if sys.platform == "linux" and api.has("sched_batch"):
        policy = os.SCHED_BATCH if batch else os.SCHED_OTHER
        os.sched_setscheduler(task, policy, os.sched_param(0))


def pin(cpu: int) -> None:
    """Move every thread of this process to `cpu`, as SCHED_BATCH where there is one; threads
    started later inherit both."""
    global _original, _pinned, _batched
    if _original is None:
        _original = _get_affinity()
    batch = not _batched and api.has("sched_batch")
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(ProcessLookupError, PermissionError):  # a thread that ended
            _set_affinity(int(task.name), {cpu})
        if batch:
            with contextlib.suppress(OSError):
                _set_batch(int(task.name), True)
    _pinned = cpu
    _batched = _batched or batch


@contextlib.contextmanager
def unpinned() -> Iterator[None]:
    """Programs started inside get the CPUs this process had before it was pinned, and the
    normal scheduling policy.

    A child inherits the mask and the policy of the thread that starts it; only that thread
    is changed, for the moment of the start.
    """
    if _original is None:
        yield
        return
    _set_affinity(0, _original)
    if _batched:
        _set_batch(0, False)
    try:
        yield
    finally:
        if _pinned is not None:
            with contextlib.suppress(OSError):
                _set_affinity(0, {_pinned})
        if _batched:
            with contextlib.suppress(OSError):
                _set_batch(0, True)


def _cpu_times() -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies per CPU."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            values = [int(value) for value in fields]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            times[int(name[3:])] = (sum(values) - idle, sum(values))
    return times


def _own_stat() -> list[str]:
    # The fields after the command name, which may itself hold spaces and parentheses.
    return Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()


def _own_jiffies() -> int:
    fields = _own_stat()
    return int(fields[11]) + int(fields[12])


def _current_cpu() -> int:
    return int(_own_stat()[36])


class CpuKeeper:
    """Pins the process to one allowed CPU now, and re-chooses it every INTERVAL seconds."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self._interval = interval
        self._stop = threading.Event()
        # A process forked from a pinned one starts from what that one had before pinning.
        self._allowed: list[int] = []
        if available():
            self._allowed = sorted(_original if _original is not None else _get_affinity())
        self.cpu: int | None = None

    def start(self) -> None:
        if os.environ.get(SETTING) == "any" or len(self._allowed) < 2:
            return
        try:
            times, own = _cpu_times(), _own_jiffies()
            # Start where the kernel has put us; the keeper moves us if that CPU is busy.
            here = _current_cpu()
            cpu = here if here in self._allowed else self._allowed[0]
            pin(cpu)
        except (OSError, ValueError, IndexError) as exc:
            log.info("leaving CPU placement to the kernel: %s", exc)
            return
        self.cpu = cpu
        threading.Thread(
            target=self._run, args=(times, own), name="cpu-keeper", daemon=True
        ).start()

    def _run(self, times: dict[int, tuple[int, int]], own: int) -> None:
        while not self._stop.wait(self._interval):
            try:
                now, own_now = _cpu_times(), _own_jiffies()
            except (OSError, ValueError, IndexError):
                return
            busy = {}
            for cpu in self._allowed:
                if cpu in now and cpu in times and now[cpu][1] > times[cpu][1]:
                    busy[cpu] = (now[cpu][0] - times[cpu][0]) / (now[cpu][1] - times[cpu][1])
            span = max((now[cpu][1] - times[cpu][1] for cpu in busy), default=0)
            share = (own_now - own) / span if span else 0.0
            times, own = now, own_now
            assert self.cpu is not None
            chosen = choose(self.cpu, busy, share)
            if chosen != self.cpu:
                log.info("moving to CPU %d (CPU %d is busy with other work)", chosen, self.cpu)
                try:
                    pin(chosen)
                except OSError as exc:  # e.g. the CPU went offline or out of our cpuset
                    log.info("staying on CPU %d: %s", self.cpu, exc)
                    continue
                self.cpu = chosen

    def stop(self) -> None:
        self._stop.set()
