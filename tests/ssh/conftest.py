"""Fixtures for tests against the in-process SSH servers (no root, no lab needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ssh.faults import FaultProxy
from tests.ssh.helpers import AgentThread, agent_thread, stop_started_processes
from tests.ssh.world import FaultBastion, World


@pytest.fixture(autouse=True)
def stop_processes(isolated_dirs: Path) -> Iterator[None]:
    """Every bastionctl process a test started is stopped after it, by its pid, even on failure.

    Found by this test's XDG_RUNTIME_DIR (isolated_dirs), so never pytest itself, nor what
    another test started; an agent run in a thread writes pytest's own pid (skipped by pid).
    """
    yield
    stop_started_processes()


@pytest.fixture(scope="session")
def ssh_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The bastion server-01, targets server-02/03 and their services, once per session."""
    world = World.start(tmp_path_factory.mktemp("ssh-world"))
    try:
        yield world
    finally:
        world.stop()


@pytest.fixture
def bulk_config(ssh_world: World, tmp_path: Path, isolated_dirs: Path) -> Path:
    """tmp_path/bulk.toml as the bulk user (no reuse ban, no rate limit), secret stored."""
    path = ssh_world.write_config(tmp_path / "bulk.toml", "bulk")
    ssh_world.store_secret("bulk")
    return path


@pytest.fixture
def op_config(ssh_world: World, tmp_path: Path, isolated_dirs: Path) -> Path:
    """tmp_path/op.toml as the op user (one login per code, 3 logins per 30 s), secret stored."""
    path = ssh_world.write_config(tmp_path / "op.toml", "op")
    ssh_world.store_secret("op")
    return path


@pytest.fixture
def asking_config(ssh_world: World, tmp_path: Path) -> Path:
    """The bulk user's config with no secret in the keyring: every bastion login asks."""
    return ssh_world.write_config(tmp_path / "asks.toml", "bulk")


@pytest.fixture
def fault_bastion(ssh_world: World, tmp_path: Path, isolated_dirs: Path) -> Iterator[FaultBastion]:
    """A FaultProxy in front of the bastion and tmp_path/fault.toml (bulk user) using it.

    The config's known_hosts (tmp_path/fault.known_hosts) lists the bastion at the proxy's
    port too, so bastionctl logs in through the proxy as it would to the bastion itself.
    """
    proxy = FaultProxy(ssh_world.bastion.port)
    proxy.start()
    try:
        config = ssh_world.write_config(tmp_path / "fault.toml", "bulk", bastion_port=proxy.port)
        ssh_world.store_secret("bulk")
        yield FaultBastion(proxy, config)
    finally:
        proxy.stop()


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[AgentThread]:
    """The agent in a thread of this process, ready; stopped at the end."""
    with agent_thread(monkeypatch) as running:
        yield running
