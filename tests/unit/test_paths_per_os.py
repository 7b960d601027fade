"""Where bastionctl keeps things on each OS: what platformdirs gives is what README says."""

from __future__ import annotations

import re
from pathlib import Path

import platformdirs.macos
import platformdirs.unix
import platformdirs.windows
import pytest

from bastionctl import paths

README = Path(__file__).resolve().parents[2] / "README.md"
KINDS = ("config", "state", "cache", "data", "runtime")
LOCAL = r"C:\Users\NAME\AppData\Local"


def readme_table() -> dict[str, dict[str, str]]:
    """The 'Where things live' block: kind -> {linux, macos, windows} -> path as written."""
    text = README.read_text()
    block = text.split("Where things live", 1)[1].split("```", 2)[1]
    table: dict[str, dict[str, str]] = {}
    for line in block.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0] in KINDS:
            kind, linux, macos, windows = cells
            table[kind] = {"linux": linux, "macos": macos, "windows": windows}
    assert sorted(table) == sorted(KINDS)
    return table


def dirs_of(system: platformdirs.PlatformDirsABC) -> dict[str, str]:
    return {
        "config": system.user_config_dir,
        "state": system.user_state_dir,
        "cache": system.user_cache_dir,
        "data": system.user_data_dir,
        "runtime": system.user_runtime_dir,
    }


@pytest.fixture(autouse=True)
def no_xdg_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """The defaults: on Linux and macOS the XDG_* variables would override them."""
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)


def test_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/me")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    found = dirs_of(platformdirs.unix.Unix(paths.APP, appauthor=False))
    for kind, where in readme_table().items():
        expected = (
            where["linux"].replace("~", "/home/me").replace("$XDG_RUNTIME_DIR", "/run/user/1000")
        )
        assert found[kind] == expected, kind


def test_macos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/Users/me")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    found = dirs_of(platformdirs.macos.MacOS(paths.APP, appauthor=False))
    for kind, where in readme_table().items():
        assert found[kind] == where["macos"].replace("~", "/Users/me"), kind


def test_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    folders = {"CSIDL_LOCAL_APPDATA": LOCAL, "CSIDL_APPDATA": r"C:\Users\NAME\AppData\Roaming"}
    monkeypatch.setattr(platformdirs.windows, "get_win_folder", folders.__getitem__)
    found = dirs_of(platformdirs.windows.Windows(paths.APP, appauthor=False))
    for kind, where in readme_table().items():
        # On Linux, platformdirs joins the Windows folder with "/": compare the parts.
        written = where["windows"].replace("%LOCALAPPDATA%", LOCAL).split("\\")
        assert re.split(r"[\\/]", found[kind]) == written, kind


def test_bastionctl_asks_platformdirs_without_an_author_level() -> None:
    # On Windows an author level would make it %LOCALAPPDATA%\bastionctl\bastionctl.
    assert paths._dirs().appauthor is False
