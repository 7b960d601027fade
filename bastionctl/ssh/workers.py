"""Reusable threads for the blocking work of forwarded connections.

A thread per connection cost a thread start (and its exit) for every new connection: on one
CPU ~45 us each, twice per connection, and a hand-shake with the starting thread. Here a
connection is handed to a worker that waits idle for it (one wake-up); workers are started
only when none is idle and leave after IDLE_EXIT seconds without work, so a burst of
connections leaves no threads behind.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

IDLE_EXIT = 10.0
Task = Callable[[], None]


class Workers:
    def __init__(self, name: str, idle_exit: float = IDLE_EXIT) -> None:
        self._name = name
        self._idle_exit = idle_exit
        self._tasks: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Workers waiting for a task that no submitted task has claimed yet.
        self._idle = 0
        self.threads = 0  # alive now
        self.started = 0  # ever
        # Set by trim() until the next submit: a worker that finishes its task leaves.
        self._draining = False

    def submit(self, task: Task) -> None:
        """Run `task` on an idle worker, or on a new one when none is idle."""
        with self._lock:
            self._draining = False
            if self._idle:
                self._idle -= 1  # claimed: a waiting worker takes it from the queue
                self._tasks.put(task)
                return
            self.threads += 1
            self.started += 1
        try:
            threading.Thread(target=self._work, args=(task,), name=self._name, daemon=True).start()
        except BaseException:
            with self._lock:
                self.threads -= 1
            raise

    def _work(self, task: Task) -> None:
        while True:
            try:
                task()
            except Exception:  # a task's failure must not cost the pool its worker
                log.exception("%s: a task failed", self._name)
            del task  # what it holds (sockets, channels) goes now, not at the next task
            with self._lock:
                if self._draining:
                    self.threads -= 1
                    return
                self._idle += 1
            while True:
                try:
                    task = self._tasks.get(timeout=self._idle_exit)
                    if task is _EXIT:
                        return  # trim() claimed this worker (and counted it gone)
                    break
                except queue.Empty:
                    with self._lock:
                        # Unclaimed idle workers outnumber queued tasks: one may leave.
                        if self._idle:
                            self._idle -= 1
                            self.threads -= 1
                            return

    def trim(self) -> None:
        """Let every idle worker leave now, and each busy one when its task ends, until the
        next submit (a forwarder closed: its connections' workers are not kept 10 s)."""
        with self._lock:
            self._draining = True
            leaving, self._idle = self._idle, 0
            self.threads -= leaving
        for _ in range(leaving):
            self._tasks.put(_EXIT)


def _exit() -> None:
    """The sentinel trim() queues: the worker that takes it leaves."""


_EXIT: Task = _exit
_shared: Workers | None = None
_shared_lock = threading.Lock()


def shared() -> Workers:
    """The process's pool for forwarded connections."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Workers("forward-worker")
        return _shared
