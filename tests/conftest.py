"""Fixtures shared by every test: an isolated home for config, state, cache and keyring."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dns import unbound


def _tree(path: Path) -> dict[str, float]:
    if not path.is_dir():
        return {}
    return {str(p): p.lstat().st_mtime for p in [path, *path.rglob("*")]}


@pytest.fixture(scope="session", autouse=True)
def real_ssh_dir_untouched() -> Iterator[None]:
    """No test writes in the ~/.ssh that ssh itself uses (the passwd home's, not $HOME's)."""
    from bastionctl.system.home import ssh_home

    ssh_dir = ssh_home() / ".ssh"
    before = _tree(ssh_dir)
    yield
    assert _tree(ssh_dir) == before, f"a test changed {ssh_dir}"


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own XDG dirs and a file keyring inside them; nothing touches ~."""
    home = tmp_path / "home"
    for name, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_RUNTIME_DIR", "run"),
    ):
        path = home / sub
        path.mkdir(parents=True)
        path.chmod(0o700)
        monkeypatch.setenv(name, str(path))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    monkeypatch.delenv("BASTIONCTL_CONFIG", raising=False)
    # No AWS set-up leaks in from the machine, and nothing asks the instance metadata service.
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("BASTIONCTL_LAB_DIR", raising=False)
    yield home


@pytest.fixture
def platform_view(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """bastionctl as on another OS (parametrize indirectly with None, "darwin" or "win32"): what
    that OS's Python lacks is taken away, in this process and the ones it starts."""
    from bastionctl.system import api

    name: str | None = getattr(request, "param", None)
    if name:
        monkeypatch.setenv(api.VIEW_SETTING, name)
    else:
        monkeypatch.delenv(api.VIEW_SETTING, raising=False)
    caches = (api.view, api.has, api.is_wsl)
    for cache in caches:
        cache.cache_clear()
    yield name or "native"
    monkeypatch.undo()
    for cache in caches:
        cache.cache_clear()


VIEWS = pytest.mark.parametrize(
    "platform_view", [None, "darwin", "win32"], indirect=True, ids=["native", "darwin", "win32"]
)


@pytest.fixture(scope="session")
def resolvers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, unbound.Unbound]]:
    """Three real resolvers: plain, DNS64 with 64:ff9b::/96, DNS64 with a /64 of its own."""
    root = tmp_path_factory.mktemp("unbound")
    started: dict[str, unbound.Unbound] = {}
    try:
        started["plain"] = unbound.start(root / "plain", None)
        started["wkp"] = unbound.start(root / "wkp", "64:ff9b::/96")
        started["nsp"] = unbound.start(root / "nsp", "fd64:1:2:3::/64")
        yield started
    finally:
        for server in started.values():
            unbound.stop(server)
