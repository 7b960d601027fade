"""The pool that runs forwarded connections: reuses idle workers, starts one only when none
is idle, lets idle ones go, and survives a task that fails."""

from __future__ import annotations

import threading
import time

from bastionctl.ssh.workers import Workers


def wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_one_after_another_reuses_one_worker() -> None:
    pool = Workers("test-pool", idle_exit=5)
    names: list[str] = []
    for _ in range(50):
        done = threading.Event()

        def task(done: threading.Event = done) -> None:
            names.append(threading.current_thread().name)
            done.set()

        pool.submit(task)
        assert done.wait(5)
        assert wait_for(lambda: pool._idle == 1)  # back to waiting before the next
    assert pool.threads == 1
    assert len(names) == 50


def test_blocked_workers_make_new_ones_and_idle_ones_leave() -> None:
    pool = Workers("test-pool", idle_exit=0.2)
    release = threading.Event()
    started = threading.Semaphore(0)

    def blocking() -> None:
        started.release()
        release.wait(5)

    for _ in range(8):
        pool.submit(blocking)
    for _ in range(8):
        assert started.acquire(timeout=5)  # all eight run at once: none waits for another
    assert pool.threads == 8
    release.set()
    assert wait_for(lambda: pool.threads == 0)
    ran = threading.Event()
    pool.submit(ran.set)  # a pool that emptied starts again
    assert ran.wait(5)


def test_a_failing_task_does_not_cost_the_pool_its_worker() -> None:
    pool = Workers("test-pool", idle_exit=5)

    def failing() -> None:
        raise ValueError("boom")

    pool.submit(failing)
    assert wait_for(lambda: pool._idle == 1)
    ran = threading.Event()
    pool.submit(ran.set)
    assert ran.wait(5)
    assert pool.threads == 1


def test_trim_lets_idle_workers_go_now_and_busy_ones_when_done() -> None:
    pool = Workers("test-pool-trim", idle_exit=60)
    release = threading.Event()
    pool.submit(lambda: None)
    assert wait_for(lambda: pool._idle == 1)
    pool.submit(release.wait)  # takes the idle worker
    pool.submit(lambda: None)  # a second worker, idle once done
    assert wait_for(lambda: pool._idle == 1) and pool.threads == 2

    def alive() -> int:
        return sum(t.name == "test-pool-trim" for t in threading.enumerate())

    pool.trim()
    assert wait_for(lambda: alive() == 1)  # the idle one left at once, not after 60 s
    release.set()
    assert wait_for(lambda: alive() == 0) and pool.threads == 0
    done = threading.Event()
    pool.submit(done.set)  # the pool still works after a trim, keeping its worker again
    assert done.wait(5)
    assert wait_for(lambda: pool._idle == 1) and alive() == 1
    pool.trim()
    assert wait_for(lambda: alive() == 0)
