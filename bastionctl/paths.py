"""Where bastionctl keeps config, cache, state and runtime files (platformdirs + overrides)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import platformdirs

APP = "bastionctl"
CONFIG_ENV = "BASTIONCTL_CONFIG"


def _dirs() -> platformdirs.PlatformDirs:
    # No "author" level on Windows: %LOCALAPPDATA%\bastionctl, not ...\bastionctl\bastionctl.
    return platformdirs.PlatformDirs(APP, appauthor=False)


def config_dir() -> Path:
    return Path(_dirs().user_config_dir)


def default_config_file() -> Path:
    return config_dir() / "config.toml"


def lab_config_file() -> Path:
    """The config `bastionctl lab up` writes; used when no other config exists."""
    return config_dir() / "lab.toml"


def ssh_include_file() -> Path:
    """Where `ssh-config --write` installs the generated config by default."""
    return Path.home() / ".ssh" / "config.d" / "bastionctl.conf"


def cache_dir() -> Path:
    return Path(_dirs().user_cache_dir)


def state_dir() -> Path:
    return Path(_dirs().user_state_dir)


def data_dir() -> Path:
    """The user's own data (on Windows the local, not the roaming, app data)."""
    return Path(_dirs().user_data_dir)


def managed_known_hosts() -> Path:
    """The known_hosts file bastionctl writes (`known-hosts sync`, accepted keys); one of the
    default `known_hosts` files."""
    return data_dir() / "known_hosts"


def platform_runtime_dir() -> Path:
    """platformdirs' answer; bastionctl uses system.files.runtime_dir(), which checks it."""
    # Without XDG_RUNTIME_DIR (a headless root shell, cron) platformdirs falls back to a shared
    # /tmp path and warns on stderr each time.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Path(_dirs().user_runtime_dir)


def env_config_file() -> Path | None:
    value = os.environ.get(CONFIG_ENV)
    return Path(value).expanduser() if value else None
