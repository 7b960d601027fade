"""Starting a background process that outlives the command that started it.

Where `fork` exists and this process has a single thread, a fork runs it (no second interpreter
start-up: the agent is ready in about 0.1 s); otherwise a new interpreter in a detached child:
a new session on POSIX, DETACHED_PROCESS and a new process group on Windows. Either way its
output goes to a log file and the caller gets a way to ask whether it is still alive.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bastionctl.sanitise import SafeFormatter
from bastionctl.system import api
from bastionctl.system.files import open_private_log

log = logging.getLogger(__name__)

Alive = Callable[[], bool]


def can_fork() -> bool:
    """Whether a fork of this process can run Python code safely: fork exists and no other
    thread could hold a lock the child would inherit."""
    return api.has("fork") and threading.active_count() == 1


def fork_detached(child: Callable[[], None], log_file: Path, verbose: bool) -> Alive:
    """Run `child` in a fork of this process, detached from its session and terminal.

    Only where `can_fork()`; the child exits when `child` returns (status 1 if it raised).
    """
    if sys.platform == "win32" or not can_fork():
        raise RuntimeError("fork_detached() where fork cannot be used")
    # Whatever this process has buffered must not be written a second time by the fork.
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            os.setsid()
            _redirect_stdio(log_file)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            root = logging.getLogger()
            root.handlers = [logging.StreamHandler(sys.stderr)]
            # The agent's log file: paramiko logs what servers send, so sanitised.
            root.handlers[0].setFormatter(
                SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            root.setLevel(logging.INFO if verbose else logging.WARNING)
            child()
        except BaseException:
            log.exception("the background process failed")
            status = 1
        finally:
            logging.shutdown()
            os._exit(status)

    def alive() -> bool:
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return False
        return done == 0

    return alive


def _redirect_stdio(log_file: Path) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    out = open_private_log(log_file)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)


def spawn_detached(argv: Sequence[str], log_file: Path) -> Alive:
    """Start `argv` in a new process, detached from this one's session and console."""
    options: dict[str, Any] = {}
    if sys.platform == "win32" and api.has("DETACHED_PROCESS"):
        options["creationflags"] = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
    elif api.has("setsid"):
        options["start_new_session"] = True
    with os.fdopen(open_private_log(log_file), "ab") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            **options,
        )
    return lambda: process.poll() is None
