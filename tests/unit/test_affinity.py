"""One CPU for a tunnel-holding process: the choice, the pinning, and moving off a busy CPU;
its threads are SCHED_BATCH there (woken threads do not preempt their waker), what it starts
is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from bastionctl.system.cpu import MARGIN, choose


def test_stays_while_its_cpu_is_busy_mostly_with_itself() -> None:
    assert choose(0, {0: 0.9, 1: 0.1}, own=0.85) == 0


def test_moves_when_other_work_fills_its_cpu() -> None:
    assert choose(0, {0: 0.95, 1: 0.2}, own=0.3) == 1


def test_does_not_flap_over_small_differences() -> None:
    assert choose(1, {0: 0.3, 1: 0.3 + MARGIN - 0.01}, own=0.0) == 1


def test_picks_the_idlest_of_several() -> None:
    assert choose(0, {0: 1.0, 1: 0.6, 2: 0.1, 3: 0.5}, own=0.0) == 2


def test_a_cpu_it_may_no_longer_use_is_left() -> None:
    assert choose(5, {0: 0.4, 1: 0.2}, own=0.0) == 1


KEEPER = textwrap.dedent(
    """
    import json, os, sys, threading, time
    from bastionctl.system import cpu as affinity
    before = threading.Thread(target=time.sleep, args=(3,), daemon=True)
    before.start()
    keeper = affinity.CpuKeeper(interval=float(sys.argv[1]))
    keeper.start()
    after = threading.Thread(target=time.sleep, args=(3,), daemon=True)
    after.start()
    first = keeper.cpu
    hog = None
    if first is not None and sys.argv[2] == "hog":
        # Other work that fills our CPU: the keeper should leave it.
        hog = os.fork()
        if hog == 0:
            os.sched_setaffinity(0, {first})
            while True:
                pass
        deadline = time.monotonic() + 20
        while keeper.cpu == first and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(hog, 9)
        os.waitpid(hog, 0)
    tids = [int(t) for t in os.listdir("/proc/self/task")]
    tasks = [sorted(os.sched_getaffinity(t)) for t in tids]
    policies = sorted({os.sched_getscheduler(t) for t in tids})
    print(json.dumps({"first": first, "now": keeper.cpu, "tasks": tasks, "policies": policies}))
    """
)


def run_python(script: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
    """The lines a fresh interpreter prints running `script` (so pinning stays there)."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def run_keeper(mode: str, env: dict[str, str] | None = None) -> dict[str, object]:
    return json.loads(run_python(KEEPER, "0.3", mode, env=env)[-1])  # type: ignore[no-any-return]


def test_every_thread_old_and_new_runs_on_the_chosen_cpu() -> None:
    found = run_keeper("idle")
    if len(os.sched_getaffinity(0)) < 2:
        assert found["first"] is None  # nothing to choose between: left to the kernel
        return
    assert found["now"] == found["first"]
    assert found["tasks"] and all(task == [found["first"]] for task in found["tasks"])
    assert found["policies"] == [os.SCHED_BATCH]


def test_leaves_a_cpu_that_other_work_fills() -> None:
    found = run_keeper("hog")
    if len(os.sched_getaffinity(0)) < 2:
        assert found["first"] is None
        return
    assert found["now"] != found["first"]
    assert all(task == [found["now"]] for task in found["tasks"])


def test_bastionctl_cpu_any_leaves_placement_to_the_kernel() -> None:
    found = run_keeper("idle", {"BASTIONCTL_CPU": "any"})
    assert found["first"] is None
    allowed = sorted(os.sched_getaffinity(0))
    assert all(task == allowed for task in found["tasks"])
    assert found["policies"] == [os.SCHED_OTHER]


LAUNCH = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from bastionctl.system import cpu as affinity
    from bastionctl.tunnels import launch
    before = sorted(os.sched_getaffinity(0))
    keeper = affinity.CpuKeeper()
    keeper.start()
    probe = "import os; print(sorted(os.sched_getaffinity(0)), os.sched_getscheduler(0))"
    command = launch.ClientCommand([sys.executable, "-c", probe], "python")
    child = launch.launch(command)
    child.wait()
    with affinity.unpinned():
        inside = sorted(os.sched_getaffinity(0))
    print(json.dumps({"before": before, "pinned": keeper.cpu, "inside": inside,
                      "after": sorted(os.sched_getaffinity(0)),
                      "policy": os.sched_getscheduler(0)}))
    """
)


def test_a_launched_client_gets_every_cpu_back() -> None:
    child_line, found_line = run_python(LAUNCH)
    found = json.loads(found_line)
    expected = found["before"]
    allowed, policy = child_line.rsplit(" ", 1)
    # The client runs wherever the kernel likes, with the normal policy.
    assert json.loads(allowed) == expected
    assert int(policy) == os.SCHED_OTHER
    assert found["inside"] == expected
    if found["pinned"] is not None:
        # And the tunnel process stays pinned, SCHED_BATCH.
        assert found["after"] == [found["pinned"]]
        assert found["policy"] == os.SCHED_BATCH
