"""The lab, once per test session, and helpers to drive `bastionctl` against it.

Lab tests are skipped only off CI when the machine cannot run the lab (no root, no
packages); under CI=true that is a failure, so CI can never pass without them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastionctl.errors import LabError
from bastionctl.lab import LabInfo, LabSpec, check_prerequisites, down, up

from .helpers import store_secret, write_config

TEST_LAB = LabSpec(name="bclt", net_id=2, root=Path("/var/lib/bastionctl-lab/bclt"))


def require_lab() -> None:
    try:
        check_prerequisites()
    except LabError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"lab tests must run under CI, but: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> LabInfo:
    require_lab()
    down(TEST_LAB)  # leftovers of an interrupted earlier run
    request.addfinalizer(lambda: down(TEST_LAB))
    return up(TEST_LAB)


class OpPacer:
    """The op user allows 3 logins per 30 s; keep op-user logins >= 10.5 s apart."""

    def __init__(self) -> None:
        self.last = 0.0

    def wait(self) -> None:
        delay = self.last + 10.5 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.last = time.monotonic()


@pytest.fixture(scope="session")
def op_pacer() -> OpPacer:
    return OpPacer()


@pytest.fixture(scope="session")
def op_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state dir for every op-user test, so used TOTP steps are shared like for a user."""
    path = tmp_path_factory.mktemp("op-state")
    path.chmod(0o700)
    return path


@pytest.fixture
def bulk_config(lab: LabInfo, tmp_path: Path) -> Path:
    """Config for the lab's bulk user (no reuse ban, no rate limit) with its secret stored."""
    config = write_config(lab, tmp_path / "bulk.toml", bulk=True)
    store_secret(config, lab.read_secret(bulk=True))
    return config


@pytest.fixture
def env_with(op_state: Path) -> Iterator[dict[str, str]]:
    env = os.environ.copy()
    env["XDG_STATE_HOME"] = str(op_state)
    yield env


@pytest.fixture(autouse=True)
def stop_agents(isolated_dirs: Path) -> Iterator[None]:
    """A detached agent a test started is stopped by this test, by its pid, even on failure."""
    yield
    pid_file = isolated_dirs / "run" / "bastionctl" / "tunnels" / "agent.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
